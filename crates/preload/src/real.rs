//! libc's own functions, the ones this library's exports stand in front of: found with
//! `dlsym(RTLD_NEXT, name)` on first use and kept.
//!
//! Calls on fds that are not ustack sockets go here unchanged, and so do the library's
//! own calls on its kernel fds (the socket pairs that mirror readiness, the TUN).

use std::ffi::CStr;
use std::sync::atomic::{AtomicUsize, Ordering};

use libc::{c_int, c_ulong, c_void, iovec, msghdr, size_t, sockaddr, socklen_t, ssize_t};

/// The address of libc's `name`, looked up once. Without it nothing can work: the process
/// is told why and aborted (a library loaded into a program that has no libc `read`).
fn resolve(slot: &AtomicUsize, name: &CStr) -> usize {
    let cached = slot.load(Ordering::Acquire);
    if cached != 0 {
        return cached;
    }
    // SAFETY: dlsym with a NUL-terminated name; RTLD_NEXT is valid in a shared object.
    let found = unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr()) } as usize;
    if found == 0 {
        let message = format!("ustack: libc has no {name:?}; cannot run\n");
        // SAFETY: writing a buffer we own to fd 2, then aborting.
        unsafe {
            libc::syscall(libc::SYS_write, 2, message.as_ptr(), message.len());
            libc::abort();
        }
    }
    slot.store(found, Ordering::Release);
    found
}

macro_rules! real {
    ($($name:ident($($arg:ident: $ty:ty),*) -> $ret:ty;)*) => {$(
        #[allow(clippy::missing_safety_doc)]
        pub unsafe fn $name($($arg: $ty),*) -> $ret {
            static SLOT: AtomicUsize = AtomicUsize::new(0);
            let address = resolve(&SLOT, unsafe { CStr::from_bytes_with_nul_unchecked(concat!(stringify!($name), "\0").as_bytes()) });
            // SAFETY: the symbol is libc's function of this name, whose C type this is.
            let f: unsafe extern "C" fn($($ty),*) -> $ret = unsafe { std::mem::transmute(address) };
            unsafe { f($($arg),*) }
        }
    )*};
}

real! {
    socket(domain: c_int, ty: c_int, protocol: c_int) -> c_int;
    bind(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int;
    listen(fd: c_int, backlog: c_int) -> c_int;
    accept(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int;
    accept4(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t, flags: c_int) -> c_int;
    connect(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int;
    send(fd: c_int, buf: *const c_void, len: size_t, flags: c_int) -> ssize_t;
    recv(fd: c_int, buf: *mut c_void, len: size_t, flags: c_int) -> ssize_t;
    sendto(fd: c_int, buf: *const c_void, len: size_t, flags: c_int, addr: *const sockaddr, alen: socklen_t) -> ssize_t;
    recvfrom(fd: c_int, buf: *mut c_void, len: size_t, flags: c_int, addr: *mut sockaddr, alen: *mut socklen_t) -> ssize_t;
    sendmsg(fd: c_int, msg: *const msghdr, flags: c_int) -> ssize_t;
    recvmsg(fd: c_int, msg: *mut msghdr, flags: c_int) -> ssize_t;
    read(fd: c_int, buf: *mut c_void, len: size_t) -> ssize_t;
    write(fd: c_int, buf: *const c_void, len: size_t) -> ssize_t;
    readv(fd: c_int, iov: *const iovec, count: c_int) -> ssize_t;
    writev(fd: c_int, iov: *const iovec, count: c_int) -> ssize_t;
    close(fd: c_int) -> c_int;
    shutdown(fd: c_int, how: c_int) -> c_int;
    getsockname(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int;
    getpeername(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int;
    setsockopt(fd: c_int, level: c_int, name: c_int, value: *const c_void, len: socklen_t) -> c_int;
    getsockopt(fd: c_int, level: c_int, name: c_int, value: *mut c_void, len: *mut socklen_t) -> c_int;
    dup(fd: c_int) -> c_int;
    dup2(fd: c_int, to: c_int) -> c_int;
    dup3(fd: c_int, to: c_int, flags: c_int) -> c_int;
    poll(fds: *mut libc::pollfd, count: libc::nfds_t, timeout: c_int) -> c_int;
    socketpair(domain: c_int, ty: c_int, protocol: c_int, fds: *mut c_int) -> c_int;
}

/// `fcntl(fd, cmd, arg)`: variadic in C; its one optional argument is an int or a pointer,
/// passed here as a machine word, as glibc reads it.
pub unsafe fn fcntl(fd: c_int, cmd: c_int, arg: usize) -> c_int {
    static SLOT: AtomicUsize = AtomicUsize::new(0);
    let address = resolve(&SLOT, c"fcntl");
    // SAFETY: libc's fcntl, called with its C-variadic type.
    let f: unsafe extern "C" fn(c_int, c_int, ...) -> c_int = unsafe { std::mem::transmute(address) };
    unsafe { f(fd, cmd, arg) }
}

/// `ioctl(fd, request, arg)`, as [`fcntl`].
pub unsafe fn ioctl(fd: c_int, request: c_ulong, arg: usize) -> c_int {
    static SLOT: AtomicUsize = AtomicUsize::new(0);
    let address = resolve(&SLOT, c"ioctl");
    // SAFETY: libc's ioctl, called with its C-variadic type.
    let f: unsafe extern "C" fn(c_int, c_ulong, ...) -> c_int = unsafe { std::mem::transmute(address) };
    unsafe { f(fd, request, arg) }
}
