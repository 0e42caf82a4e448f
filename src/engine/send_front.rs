//! Where smoltcp believes its send stops, so that an acknowledgment beyond it is not lost.
//!
//! On a retransmission timeout smoltcp 0.14 rewinds SND.NXT to SND.UNA and sends the data
//! again from there (`remote_last_seq = local_seq_no` in `tcp::Socket::dispatch`). Until
//! it has resent everything, an ACK above the rewound SND.NXT is "unacceptable" to it: it
//! drops the segment and answers with a challenge ACK — even when the ACK is for data it
//! did send before the timeout, and the peer got. With congestion control, the window after
//! a timeout is one segment, so the peer's ACK is above SND.NXT every time: each side drops
//! the other's ACKs and resends one segment per timeout, forever (`ustack sim --congestion
//! cubic --seed 5 --drop-chance 5 --delay 5 --bytes 2097152` did this until it was fixed
//! here). RFC 9293 §3.10.7.4 only asks to ignore an ACK of something *not yet sent*
//! (beyond SND.MAX, in RFC 5961's terms).
//!
//! The rewind has a second effect: smoltcp's bare ACKs carry SND.NXT as their sequence
//! number, which after a rewind lies below the peer's RCV.NXT. The peer — Linux, or smoltcp
//! — finds such a segment outside its receive window and drops it, acknowledgment and all
//! (RFC 9293 §3.10.7.4). Linux, which never rewinds SND.NXT, sends bare ACKs at SND.MAX;
//! ustack moves smoltcp's there too.
//!
//! ustack cannot read smoltcp's SND.NXT, so it follows it from the segments smoltcp sends:
//! a retransmission from SND.UNA that is not the fast retransmit of a third duplicate ACK
//! is a timeout's rewind. An acknowledgment above that front but within what was ever sent
//! reaches smoltcp lowered to the front: smoltcp takes it, and resends the rest, which the
//! peer acknowledges again. Lowering an acknowledgment is always safe — it only costs
//! retransmissions of data the peer has.

use super::rewrite::seq_after;

/// A connection's model of smoltcp's SND.NXT and of its duplicate-ACK counter, in the
/// wire's sequence numbering.
#[derive(Debug, Clone, Default)]
pub struct SendFront {
    /// The end of the furthest segment since the last rewind: smoltcp's SND.NXT.
    front: Option<u32>,
    /// The acknowledgment number and window of the last ACK smoltcp was given.
    last_ack: Option<(u32, u16)>,
    /// Duplicate ACKs in a row, counted as smoltcp counts them.
    dup_acks: u8,
    /// The third duplicate ACK arrived: smoltcp's next retransmission is a fast retransmit,
    /// which does not rewind.
    fast_retransmit_due: bool,
}

impl SendFront {
    /// An incoming segment's acknowledgment `ack` (with `window`; `empty`: no data) on its
    /// way to smoltcp, given the furthest point ever sent (`sent_max`). Returns the
    /// acknowledgment smoltcp is to see: `ack`, or the front if `ack` lies beyond it.
    pub fn on_ack(&mut self, ack: u32, window: u16, empty: bool, sent_max: Option<u32>) -> u32 {
        let ack = match (self.front, sent_max) {
            (Some(front), Some(max)) if seq_after(ack, front) && !seq_after(ack, max) => front,
            _ => ack,
        };
        // smoltcp's duplicate ACK: no data, the same acknowledgment and window as the last
        // one, and data outstanding.
        let duplicate =
            empty && self.last_ack == Some((ack, window)) && self.front.is_some_and(|front| seq_after(front, ack));
        if duplicate {
            self.dup_acks = self.dup_acks.saturating_add(1);
            if self.dup_acks == 3 {
                self.fast_retransmit_due = true;
            }
        } else {
            self.dup_acks = 0;
        }
        self.last_ack = Some((ack, window));
        ack
    }

    /// smoltcp sent a segment that occupies `seq..seq_end` (SYN and FIN counted).
    pub fn on_sent(&mut self, seq: u32, seq_end: u32) {
        if seq == seq_end {
            return;
        }
        let una = self.last_ack.map(|(ack, _)| ack);
        let resent_from_una = una == Some(seq) && self.front.is_some_and(|front| seq_after(front, seq));
        let rewound = resent_from_una && !std::mem::take(&mut self.fast_retransmit_due);
        if rewound || self.front.is_none_or(|front| seq_after(seq_end, front)) {
            self.front = Some(seq_end);
        }
    }

    /// Where a segment smoltcp sends at `seq..seq_end` is to go out instead: at SND.MAX
    /// (`sent_max`) if it is a bare ACK behind it (after a rewind), else None. A keep-alive
    /// (at SND.UNA - 1, meant to be out of window) stays where it is.
    pub fn pure_ack_seq(&self, seq: u32, seq_end: u32, sent_max: Option<u32>) -> Option<u32> {
        let una = self.last_ack.map(|(ack, _)| ack)?;
        let max = sent_max?;
        (seq == seq_end && !seq_after(una, seq) && seq_after(max, seq)).then_some(max)
    }

    /// smoltcp's SND.NXT as followed here (wire numbering), once it has sent anything.
    #[cfg(test)]
    pub fn front(&self) -> Option<u32> {
        self.front
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSS: u32 = 1000;

    /// A sender that sent segments `0..n` (each MSS long) from sequence number 0.
    fn sent(n: u32) -> SendFront {
        let mut front = SendFront::default();
        front.on_ack(0, 100, true, None);
        for i in 0..n {
            front.on_sent(i * MSS, (i + 1) * MSS);
        }
        front
    }

    #[test]
    fn an_ack_beyond_a_timeouts_rewind_is_lowered_to_what_was_sent_since() {
        let mut front = sent(10);
        // The timeout resends the first segment only (a congestion window of one).
        front.on_sent(0, MSS);
        assert_eq!(front.front(), Some(MSS));
        // The peer had everything but the first segment: it acknowledges all ten.
        assert_eq!(front.on_ack(10 * MSS, 100, true, Some(10 * MSS)), MSS);
        // smoltcp sends on from there; the next ACK is lowered to the new front.
        front.on_sent(MSS, 3 * MSS);
        assert_eq!(front.on_ack(10 * MSS, 100, true, Some(10 * MSS)), 3 * MSS);
    }

    #[test]
    fn a_fast_retransmit_does_not_rewind() {
        let mut front = sent(10);
        for _ in 0..3 {
            front.on_ack(0, 100, true, Some(10 * MSS));
        }
        front.on_sent(0, MSS);
        assert_eq!(front.front(), Some(10 * MSS));
        assert_eq!(front.on_ack(10 * MSS, 100, true, Some(10 * MSS)), 10 * MSS);
    }

    #[test]
    fn acks_within_the_front_and_beyond_anything_sent_pass_unchanged() {
        let mut front = sent(10);
        assert_eq!(front.on_ack(5 * MSS, 100, true, Some(10 * MSS)), 5 * MSS);
        // Beyond SND.MAX: smoltcp must see it as it is, and challenge it.
        assert_eq!(front.on_ack(20 * MSS, 100, true, Some(10 * MSS)), 20 * MSS);
    }

    #[test]
    fn a_bare_ack_behind_snd_max_goes_out_at_snd_max_but_not_a_keep_alive() {
        let mut front = sent(10);
        front.on_ack(4 * MSS, 100, true, Some(10 * MSS));
        assert_eq!(front.pure_ack_seq(5 * MSS, 5 * MSS, Some(10 * MSS)), Some(10 * MSS));
        assert_eq!(front.pure_ack_seq(10 * MSS, 10 * MSS, Some(10 * MSS)), None);
        assert_eq!(front.pure_ack_seq(4 * MSS - 1, 4 * MSS - 1, Some(10 * MSS)), None, "keep-alive");
        assert_eq!(front.pure_ack_seq(5 * MSS, 6 * MSS, Some(10 * MSS)), None, "data");
    }

    #[test]
    fn sequence_numbers_wrap() {
        let mut front = SendFront::default();
        let base = u32::MAX - 1500;
        front.on_ack(base, 100, true, None);
        front.on_sent(base, base.wrapping_add(3 * MSS));
        front.on_sent(base, base.wrapping_add(MSS));
        let max = base.wrapping_add(3 * MSS);
        assert_eq!(front.on_ack(max, 100, true, Some(max)), base.wrapping_add(MSS));
    }
}
