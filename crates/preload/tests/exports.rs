//! The shared object exports each call docs/preload.md lists, under its C name, so that
//! LD_PRELOAD puts it in front of libc's. (Being an integration test also makes `cargo test`
//! build `libustack_preload.so` itself, which `ustack run`'s tests load.)

use std::ffi::CString;
use std::path::PathBuf;

/// Where `cargo test` put the library: in `deps`, beside this test.
fn library() -> PathBuf {
    std::env::current_exe().unwrap().with_file_name("libustack_preload.so")
}

#[test]
fn every_interposed_call_is_exported() {
    let path = library();
    assert!(path.is_file(), "{} was not built", path.display());
    let c_path = CString::new(path.to_str().unwrap()).unwrap();
    // RTLD_LOCAL: its symbols stay out of this process's global scope (they would replace
    // libc's for everything loaded later); dlsym on the handle still finds them.
    // SAFETY: dlopen of a library path; the library's constructors are Rust's (none run code
    // that needs the environment `ustack run` sets).
    let handle = unsafe { libc::dlopen(c_path.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    assert!(!handle.is_null(), "dlopen {}", path.display());
    let calls = [
        "socket",
        "bind",
        "listen",
        "accept",
        "accept4",
        "connect",
        "send",
        "recv",
        "sendto",
        "recvfrom",
        "sendmsg",
        "recvmsg",
        "read",
        "write",
        "readv",
        "writev",
        "close",
        "shutdown",
        "getsockname",
        "getpeername",
        "setsockopt",
        "getsockopt",
        "fcntl",
        "fcntl64",
        "ioctl",
        "dup",
        "dup2",
        "dup3",
        "__read_chk",
        "__recv_chk",
        "__recvfrom_chk",
    ];
    let missing: Vec<&str> = calls
        .iter()
        .copied()
        .filter(|name| {
            let c_name = CString::new(*name).unwrap();
            // SAFETY: dlsym on a live handle with a NUL-terminated name.
            unsafe { libc::dlsym(handle, c_name.as_ptr()) }.is_null()
        })
        .collect();
    assert!(missing.is_empty(), "not exported: {missing:?}");
}
