//! ustack for C callers, as a shared object (`libustack_preload.so`).

pub mod packetdrill;
