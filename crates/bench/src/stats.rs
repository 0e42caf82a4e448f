//! Medians, percentiles and spreads of repeated measurements.

use std::time::Duration;

/// The value at percentile `p` (0 to 100) of `samples`, by nearest rank (the smallest
/// sample with at least `p`% of the samples at or below it); `None` if there are none.
/// Sorts `samples`.
pub fn percentile(samples: &mut [f64], p: f64) -> Option<f64> {
    if samples.is_empty() {
        return None;
    }
    samples.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * samples.len() as f64).ceil() as usize;
    Some(samples[rank.clamp(1, samples.len()) - 1])
}

/// Microseconds, the unit every latency in the table is given in.
pub fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// A figure measured one or more times: the median of the repeats and how far they spread.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Figure {
    /// The median of the repeats (the mean of the middle two for an even count).
    pub median: f64,
    /// Half the range of the repeats, relative to the median: 0.04 means the repeats lay
    /// within about ±4% of it. 0 for a single measurement.
    pub spread: f64,
    /// How many repeats the median is of.
    pub repeats: usize,
    /// The smallest and largest repeat.
    pub min: f64,
    pub max: f64,
}

impl Figure {
    /// The figure of `values`; `None` if there are none or any is not finite.
    pub fn of(values: &[f64]) -> Option<Figure> {
        if values.is_empty() || values.iter().any(|v| !v.is_finite()) {
            return None;
        }
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let median = if n % 2 == 1 { sorted[n / 2] } else { (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0 };
        let range = sorted[n - 1] - sorted[0];
        let spread = if median != 0.0 { (range / 2.0 / median).abs() } else { 0.0 };
        Some(Figure { median, spread, repeats: n, min: sorted[0], max: sorted[n - 1] })
    }

    /// A figure measured once.
    pub fn once(value: f64) -> Figure {
        Figure { median: value, spread: 0.0, repeats: 1, min: value, max: value }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let mut v: Vec<f64> = (1..=100).map(f64::from).collect();
        v.reverse();
        assert_eq!(percentile(&mut v, 50.0), Some(50.0));
        assert_eq!(percentile(&mut v, 99.0), Some(99.0));
        assert_eq!(percentile(&mut v, 100.0), Some(100.0));
        assert_eq!(percentile(&mut v, 0.0), Some(1.0));
        assert_eq!(percentile(&mut [7.0], 99.0), Some(7.0));
        assert_eq!(percentile(&mut [], 50.0), None);
    }

    #[test]
    fn medians_and_spreads() {
        let f = Figure::of(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((f.median, f.repeats), (2.0, 3));
        assert!((f.spread - 0.5).abs() < 1e-12);
        assert_eq!(Figure::of(&[1.0, 2.0, 3.0, 10.0]).unwrap().median, 2.5);
        assert_eq!(Figure::of(&[4.0]).unwrap(), Figure::once(4.0));
        assert_eq!(Figure::of(&[]), None);
        assert_eq!(Figure::of(&[1.0, f64::NAN]), None);
    }
}
