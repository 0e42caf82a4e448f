//! The one error type of the socket API: POSIX errno names, as the kernel returns them.

use std::fmt;
use std::io;

macro_rules! errnos {
    ($($name:ident = $code:ident: $text:literal),* $(,)?) => {
        /// An error from a socket call, named as the Linux kernel names it.
        ///
        /// It converts into [`std::io::Error`] with the [`io::ErrorKind`] the kernel's errno
        /// of the same name maps to (`ECONNREFUSED` → `ConnectionRefused`, ...), and can be
        /// recovered from one with [`Errno::from_io`].
        #[allow(non_camel_case_types, clippy::upper_case_acronyms)]
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Errno {
            $(#[doc = $text] $name,)*
        }

        impl Errno {
            /// The errno's name, e.g. `"ECONNREFUSED"`.
            pub fn name(self) -> &'static str {
                match self { $(Errno::$name => stringify!($name),)* }
            }

            /// Linux's numeric value for this errno.
            pub fn code(self) -> i32 {
                match self { $(Errno::$name => libc::$code,)* }
            }

            /// The kernel's description, e.g. `"Connection refused"`.
            pub fn description(self) -> &'static str {
                match self { $(Errno::$name => $text,)* }
            }

            /// The errno with Linux's numeric value `code`, if ustack uses it.
            pub fn from_code(code: i32) -> Option<Errno> {
                $(if code == libc::$code { return Some(Errno::$name); })*
                None
            }
        }
    };
}

errnos! {
    EACCES = EACCES: "Permission denied",
    EADDRINUSE = EADDRINUSE: "Address already in use",
    EADDRNOTAVAIL = EADDRNOTAVAIL: "Cannot assign requested address",
    EAFNOSUPPORT = EAFNOSUPPORT: "Address family not supported by protocol",
    EAGAIN = EAGAIN: "Resource temporarily unavailable",
    EALREADY = EALREADY: "Operation already in progress",
    EBADF = EBADF: "Bad file descriptor",
    ECONNABORTED = ECONNABORTED: "Software caused connection abort",
    ECONNREFUSED = ECONNREFUSED: "Connection refused",
    ECONNRESET = ECONNRESET: "Connection reset by peer",
    EDESTADDRREQ = EDESTADDRREQ: "Destination address required",
    EHOSTDOWN = EHOSTDOWN: "Host is down",
    EHOSTUNREACH = EHOSTUNREACH: "No route to host",
    EINPROGRESS = EINPROGRESS: "Operation now in progress",
    EINVAL = EINVAL: "Invalid argument",
    EIO = EIO: "Input/output error",
    EISCONN = EISCONN: "Transport endpoint is already connected",
    EMFILE = EMFILE: "Too many open files",
    EMSGSIZE = EMSGSIZE: "Message too long",
    ENETDOWN = ENETDOWN: "Network is down",
    ENETUNREACH = ENETUNREACH: "Network is unreachable",
    ENOBUFS = ENOBUFS: "No buffer space available",
    ENONET = ENONET: "Machine is not on the network",
    ENOPROTOOPT = ENOPROTOOPT: "Protocol not available",
    ENOTCONN = ENOTCONN: "Transport endpoint is not connected",
    EOPNOTSUPP = EOPNOTSUPP: "Operation not supported",
    EPIPE = EPIPE: "Broken pipe",
    EPROTONOSUPPORT = EPROTONOSUPPORT: "Protocol not supported",
    ETIMEDOUT = ETIMEDOUT: "Connection timed out",
}

impl Errno {
    /// The errno carried by an `io::Error` made from one (or from the OS), if any.
    pub fn from_io(err: &io::Error) -> Option<Errno> {
        if let Some(errno) = err.get_ref().and_then(|inner| inner.downcast_ref::<Errno>()) {
            return Some(*errno);
        }
        err.raw_os_error().and_then(Errno::from_code)
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), self.description())
    }
}

impl std::error::Error for Errno {}

impl From<Errno> for io::Error {
    fn from(errno: Errno) -> io::Error {
        // The kernel's errno itself, so that `raw_os_error()` and `kind()` are exactly what
        // std::net would give for the same failure.
        io::Error::from_raw_os_error(errno.code())
    }
}

/// The result of a socket call.
pub type Result<T> = std::result::Result<T, Errno>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_error_has_kernel_kind_and_round_trips() {
        let err: io::Error = Errno::ECONNREFUSED.into();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
        assert_eq!(Errno::from_io(&err), Some(Errno::ECONNREFUSED));
        let err: io::Error = Errno::EAGAIN.into();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        let err: io::Error = Errno::EADDRINUSE.into();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        assert_eq!(Errno::from_io(&io::Error::from_raw_os_error(libc::EPIPE)), Some(Errno::EPIPE));
    }

    #[test]
    fn names_and_codes_match_linux() {
        assert_eq!(Errno::ETIMEDOUT.name(), "ETIMEDOUT");
        assert_eq!(Errno::ETIMEDOUT.code(), 110);
        assert_eq!(Errno::from_code(98), Some(Errno::EADDRINUSE));
        assert_eq!(Errno::EPIPE.to_string(), "EPIPE (Broken pipe)");
    }
}
