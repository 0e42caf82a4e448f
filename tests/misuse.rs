//! Rows of the errno table in docs/errno.md that no other test covers; the table names the
//! test of every row. Each errno case is asserted once in the whole suite (api_errno.rs,
//! api_tcp.rs and api_udp.rs hold the rest), so a row lives here only while nothing else
//! tests it.

use ustack::{Domain, Errno};
use ustack_testkit::*;

macro_rules! misuse {
    ($($name:ident: |$p:ident| $call:expr => $errno:ident;)*) => {
        $(
            #[test]
            fn $name() {
                let $p = pair();
                assert_eq!(err($call), Errno::$errno);
            }
        )*
    };
}

misuse! {
    getpeername_of_an_unconnected_socket: |p| tcp(&p.a, Domain::Inet).peer_addr() => ENOTCONN;
}
