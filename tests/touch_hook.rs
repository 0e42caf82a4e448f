//! `Stack::on_touched`: a layer that mirrors readiness elsewhere (the LD_PRELOAD library)
//! is told of each socket a packet made ready, as the socket's own waiters are woken.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use ustack::Events;
use ustack::engine::SockId;
use ustack_testkit::*;

/// Waits (bounded) until the hook reports `id`.
fn reported(ids: &mpsc::Receiver<SockId>, id: SockId) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match ids.recv_timeout(left) {
            Ok(got) if got == id => return true,
            Ok(_) => {}
            Err(_) => return false,
        }
    }
    false
}

#[test]
fn the_hook_hears_of_the_listener_a_handshake_completes_on_and_the_connection_data_reaches() {
    let p = pair();
    let (tx, ids) = mpsc::channel();
    assert!(p.b.on_touched(Box::new(move |id| {
        let _ = tx.send(id);
    })));
    assert!(!p.b.on_touched(Box::new(|_| {})), "a second hook is refused");
    let (l, at) = listener(&p.b, B, 4);
    let c = tcp(&p.a, domain_of(A));
    c.connect(at).unwrap();
    assert!(reported(&ids, l.id()), "the listener's accept queue filled without a word");
    let (conn, _) = l.accept().unwrap();
    c.send(b"data").unwrap();
    assert!(reported(&ids, conn.id()), "data arrived without a word");
    assert!(wait_for(&conn, Events::IN).contains(Events::IN));
}
