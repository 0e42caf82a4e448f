//! A program written for `std::net`, moved onto ustack by changing its imports and handing
//! the constructors the stack: the same methods, the same `io::Result`s, the same
//! `ErrorKind`s and raw OS errors. Two stacks on the in-memory wire, so it runs anywhere.

use std::io::{self, ErrorKind, Read, Write};
use std::net::Shutdown;
use std::thread;
use std::time::Duration;

// With std, this line would be `use std::net::{TcpListener, TcpStream, UdpSocket};`.
use ustack::{Stack, TcpListener, TcpStream, UdpSocket};
use ustack_testkit::pair;

/// An echo server as written for std (`TcpListener::bind("10.0.0.2:7")`), serving
/// `clients` connections, each on a thread of its own.
fn echo_server(stack: &Stack, clients: usize) -> io::Result<thread::JoinHandle<io::Result<()>>> {
    let listener = TcpListener::bind(stack, "10.0.0.2:7")?;
    Ok(thread::spawn(move || {
        let mut handlers = Vec::new();
        for stream in listener.incoming().take(clients) {
            let mut stream = stream?;
            stream.set_nodelay(true)?;
            handlers.push(thread::spawn(move || -> io::Result<()> {
                let mut buf = [0; 1024];
                loop {
                    let n = stream.read(&mut buf)?;
                    if n == 0 {
                        return Ok(());
                    }
                    stream.write_all(&buf[..n])?;
                }
            }));
        }
        for handler in handlers {
            handler.join().expect("no panic")?;
        }
        Ok(())
    }))
}

/// A client as written for std: connect, write, shut down writing, read to the end.
fn echo_client(stack: &Stack, message: &[u8]) -> io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(stack, "10.0.0.2:7")?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    assert_eq!(stream.peer_addr()?, "10.0.0.2:7".parse().unwrap());
    stream.write_all(message)?;
    stream.shutdown(Shutdown::Write)?;
    let mut echoed = Vec::new();
    stream.read_to_end(&mut echoed)?;
    Ok(echoed)
}

#[test]
fn a_std_echo_program_runs_on_ustack_with_its_imports_changed() -> io::Result<()> {
    let p = pair();
    let server = echo_server(&p.b, 2)?;
    let message: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
    thread::scope(|scope| -> io::Result<()> {
        let client = scope.spawn(|| echo_client(&p.a, &message));
        assert_eq!(echo_client(&p.a, b"hello")?, b"hello");
        assert_eq!(client.join().expect("no panic")?, message);
        Ok(())
    })?;
    server.join().expect("no panic")?;

    // Errors are std's: the kinds and the raw errno std::net would give.
    let refused = TcpStream::connect(&p.a, "10.0.0.2:9").unwrap_err();
    assert_eq!((refused.kind(), refused.raw_os_error()), (ErrorKind::ConnectionRefused, Some(libc::ECONNREFUSED)));
    let _held = TcpListener::bind(&p.b, "10.0.0.2:8")?;
    let in_use = TcpListener::bind(&p.b, "10.0.0.2:8").unwrap_err();
    assert_eq!(in_use.kind(), ErrorKind::AddrInUse);
    let unresolvable = TcpStream::connect(&p.a, "not an address").unwrap_err();
    assert_eq!(unresolvable.kind(), ErrorKind::InvalidInput);
    Ok(())
}

#[test]
fn a_std_udp_program_runs_on_ustack_with_its_imports_changed() -> io::Result<()> {
    let p = pair();
    let server = UdpSocket::bind(&p.b, "10.0.0.2:7")?;
    let client = UdpSocket::bind(&p.a, "0.0.0.0:0")?;
    client.set_read_timeout(Some(Duration::from_secs(5)))?;
    client.connect("10.0.0.2:7")?;
    client.send(b"ping")?;
    let mut buf = [0; 16];
    let (n, from) = server.peek_from(&mut buf)?;
    assert_eq!(&buf[..n], b"ping");
    let (n, again) = server.recv_from(&mut buf)?;
    assert_eq!(again, from, "peek_from left the datagram for recv_from");
    server.send_to(&buf[..n], from)?;
    assert_eq!(client.recv(&mut buf)?, 4);
    assert_eq!(client.peer_addr()?, "10.0.0.2:7".parse().unwrap());
    assert_eq!(client.take_error()?.map(|e| e.kind()), None);
    let multicast = client.join_multicast_v4(&"239.1.1.1".parse().unwrap(), &"0.0.0.0".parse().unwrap());
    assert_eq!(multicast.unwrap_err().raw_os_error(), Some(libc::ENOPROTOOPT), "not honoured, and says so");
    Ok(())
}
