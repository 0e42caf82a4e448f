//! The capture files in the repository's `fixtures/` directory (fixtures/README.md says
//! what each shows), found the same way from any crate's tests.

use std::path::{Path, PathBuf};

/// The repository's `fixtures/` directory.
pub fn fixtures_dir() -> PathBuf {
    // This crate lives in crates/testkit/.
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

/// `fixtures/<name>`, e.g. `fixture("kernel/echo.pcap")`.
pub fn fixture(name: &str) -> PathBuf {
    fixtures_dir().join(name)
}
