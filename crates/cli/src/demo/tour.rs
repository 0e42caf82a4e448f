//! The tour: five steps, each explained before it runs, written once for both modes.
//!
//! It makes ordinary socket calls on the traits below. Each call blocks as a blocking
//! socket's does, for at most a timeout: over a TUN it really waits; in the simulator the
//! virtual clock runs until the non-blocking call underneath can finish, and what the
//! stacks do meanwhile is printed as it happens.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ustack::Type;
use ustack::engine::SockId;

use super::{CLIENT_IP, CLOSED_PORT, ECHO_PORT, SERVER_IP, errno_text, explain, heading, ms, quote, show, step};
use crate::Failure;

/// Where the tour happens: the two stacks, and the clock its times are read from.
pub trait World {
    /// ustack at 10.7.0.2.
    fn server(&self) -> &dyn Server;
    /// The client at 10.7.0.1.
    fn client(&self) -> &dyn Client;
    /// Time since the world began: real over a TUN, virtual in the simulator.
    fn elapsed(&self) -> Duration;
    /// A step is over: what it set going (an ACK in flight) may finish before the next one
    /// is explained.
    fn end_of_step(&self) {}
}

/// The server stack: ustack.
pub trait Server {
    /// socket(AF_INET, `ty`).
    fn socket(&self, ty: Type) -> io::Result<Box<dyn Sock>>;
}

/// Who plays the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientKind {
    /// The Linux kernel, through std::net.
    Kernel,
    /// A second ustack stack.
    Ustack,
}

/// The client stack.
pub trait Client {
    fn kind(&self) -> ClientKind;
    /// connect(), with how long it took (until success or failure).
    fn connect(&self, to: SocketAddr) -> (io::Result<Box<dyn Conn>>, Duration);
    /// An unbound UDP socket.
    fn udp(&self) -> io::Result<Box<dyn Datagrams>>;
}

/// A connected TCP socket, of either stack.
pub trait Conn {
    fn send(&self, data: &[u8]) -> io::Result<usize>;
    fn recv(&self, buf: &mut [u8]) -> io::Result<usize>;
    fn shutdown_write(&self) -> io::Result<()>;
    fn local_addr(&self) -> io::Result<SocketAddr>;
    /// The TCP state, RFC 9293 style (`ESTABLISHED`, `TIME-WAIT`), `CLOSED` when the stack
    /// holds no connection for it, or `?` if unknown.
    fn state(&self) -> String;
    /// The state, once it is `want` (one the connection is about to reach: an ACK is in
    /// flight), or after waiting a little for it.
    fn state_when(&self, want: &str) -> String;
}

/// A UDP socket, of either stack.
pub trait Datagrams {
    fn send_to(&self, data: &[u8], to: SocketAddr) -> io::Result<usize>;
    fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)>;
}

/// A socket of the server stack, through ustack's socket calls.
pub trait Sock: Conn + Datagrams {
    /// Its number, like a file descriptor's.
    fn id(&self) -> SockId;
    fn bind(&self, addr: SocketAddr) -> io::Result<()>;
    fn listen(&self, backlog: u32) -> io::Result<()>;
    fn accept(&self) -> io::Result<(Box<dyn Sock>, SocketAddr)>;
    fn connect(&self, to: SocketAddr) -> io::Result<()>;
}

/// The TCP connection steps 1, 2 and 5 share: both ends, and the server's listener.
/// Dropped in this order: close() on the two ends, then on the listener, as a server
/// would.
struct Tcp {
    accepted: Box<dyn Sock>,
    conn: Box<dyn Conn>,
    /// Only held: it listens until the tour is over.
    _listener: Box<dyn Sock>,
}

/// Runs the tour.
pub fn run(world: &dyn World) -> Result<(), Failure> {
    let echo = SocketAddr::new(IpAddr::V4(SERVER_IP), ECHO_PORT);
    let tcp = handshake(world, echo)?;
    world.end_of_step();
    echo_bytes(&tcp)?;
    world.end_of_step();
    datagrams(world, echo)?;
    world.end_of_step();
    refusal(world)?;
    world.end_of_step();
    close(&tcp)
}

/// Step 1: a listener, a client's connect(), the server's accept().
fn handshake(world: &dyn World, echo: SocketAddr) -> Result<Tcp, Failure> {
    heading(1, "TCP handshake: connect() meets accept()");
    explain(
        "A server asks for connections with socket(), bind() and listen(). A client's connect() \
         sends a SYN; the server's stack answers SYN-ACK; the client's ACK completes the \
         three-way handshake. All of that happens inside the two stacks: accept() only hands \
         the server a connection that is already established.",
    );
    let listener = world.server().socket(Type::Stream).map_err(step("socket"))?;
    listener.bind(echo).map_err(step("bind"))?;
    listener.listen(8).map_err(step("listen"))?;
    show(
        "server",
        format!(
            "socket(AF_INET, SOCK_STREAM) = #{}; bind({echo}); listen(backlog 8). State: {}",
            listener.id(),
            listener.state()
        ),
    );
    show("client", format!("connect({echo}) ..."));
    let (connected, took) = world.client().connect(echo);
    let conn = connected.map_err(step("connect"))?;
    let client_addr = conn.local_addr().map_err(step("getsockname"))?;
    show("client", format!("connect() returned after {}: {client_addr} -> {echo}. State: {}", ms(took), conn.state()));
    let (accepted, peer) = listener.accept().map_err(step("accept"))?;
    let local = accepted.local_addr().map_err(step("getsockname"))?;
    show("server", format!("accept() = #{}: local {local}, peer {peer}. State: {}", accepted.id(), accepted.state()));
    explain(&format!(
        "The client's port {} was picked by its stack from the ephemeral range; the server's is \
         the one it listens on. The two address:port pairs name the connection. The listening \
         socket stays in LISTEN, ready for the next client.",
        client_addr.port()
    ));
    Ok(Tcp { accepted, conn, _listener: listener })
}

/// Step 2: the client sends a message in two calls, the server echoes it.
fn echo_bytes(tcp: &Tcp) -> Result<(), Failure> {
    let (accepted, conn) = (tcp.accepted.as_ref(), tcp.conn.as_ref());
    heading(2, "Echo: TCP is a byte stream");
    explain(
        "send() hands bytes to the stack, which cuts them into segments as it sees fit; recv() \
         returns whatever has arrived — maybe several send()s at once, maybe part of one. TCP \
         keeps the order of the bytes, not the boundaries of the calls. The server here sends \
         back everything it reads.",
    );
    let message: &[u8] = b"hello, ustack!\n";
    let (first, second) = message.split_at(7);
    send_all(conn, first)?;
    send_all(conn, second)?;
    show("client", format!("send({}) and send({}): {} bytes in two calls", quote(first), quote(second), message.len()));
    let mut buf = [0u8; 1024];
    let mut got = 0;
    while got < message.len() {
        let n = accepted.recv(&mut buf[got..]).map_err(step("recv"))?;
        if n == 0 {
            return Err(Failure::new("demo: echo: the client closed early"));
        }
        show("server", format!("recv() = {n} bytes {}", quote(&buf[got..got + n])));
        got += n;
    }
    send_all(accepted, &buf[..got])?;
    show("server", format!("send() = {got} bytes back"));
    let mut back = [0u8; 1024];
    let mut got_back = 0;
    while got_back < message.len() {
        let n = conn.recv(&mut back[got_back..]).map_err(step("recv"))?;
        if n == 0 {
            return Err(Failure::new("demo: echo: the server closed early"));
        }
        show("client", format!("recv() = {n} bytes {}", quote(&back[got_back..got_back + n])));
        got_back += n;
    }
    if back[..got_back] != *message {
        return Err(Failure::new("demo: echo: the bytes that came back differ from those sent"));
    }
    Ok(())
}

/// Step 3: three datagrams to the server's UDP echo, and their answers. One lost on the
/// way (--drop-chance) is told, not a failure: UDP does not promise delivery.
fn datagrams(world: &dyn World, echo: SocketAddr) -> Result<(), Failure> {
    heading(3, "UDP: datagrams, boundaries kept");
    explain(
        "UDP has no connection and no handshake: each sendto() sends one datagram to an \
         address, and each recvfrom() returns exactly one datagram, whole, together with the \
         address it came from — which is where a server sends its answer.",
    );
    let server_udp = world.server().socket(Type::Dgram).map_err(step("socket"))?;
    server_udp.bind(echo).map_err(step("bind"))?;
    show("server", format!("socket(AF_INET, SOCK_DGRAM) = #{}; bind({echo})", server_udp.id()));
    let client_udp = world.client().udp().map_err(step("socket"))?;
    let datagrams: [&[u8]; 3] = [b"one", b"two", b"three"];
    for d in datagrams {
        client_udp.send_to(d, echo).map_err(step("sendto"))?;
    }
    let names: Vec<String> = datagrams.iter().map(|d| quote(d)).collect();
    show("client", format!("sendto({echo}) three times: {}", names.join(", ")));
    let mut buf = [0u8; 1024];
    let mut answered = 0;
    for _ in datagrams {
        let Some((n, from)) = recv_datagram(world, "server", server_udp.as_ref(), &mut buf)? else { break };
        show("server", format!("recvfrom() = {n} bytes {} from {from}; sendto({from}) it back", quote(&buf[..n])));
        server_udp.send_to(&buf[..n], from).map_err(step("sendto"))?;
        answered += 1;
    }
    let mut came_back = 0;
    for _ in 0..answered {
        let Some((n, from)) = recv_datagram(world, "client", client_udp.as_ref(), &mut buf)? else { break };
        show("client", format!("recvfrom() = {n} bytes {} from {from}", quote(&buf[..n])));
        came_back += 1;
    }
    if came_back == datagrams.len() {
        explain(
            "Three sendto()s, three recvfrom()s, three answers: the datagram boundaries were kept. \
             (Over TCP, \"one\", \"two\" and \"three\" could have arrived as \"onetwothree\".) The \
             client's socket was never bound: its first sendto() picked a port, as connect() does.",
        );
    } else {
        explain(&format!(
            "Only {came_back} of the three datagrams came back: the others were lost on the way, \
             and UDP never sends a datagram again (TCP would have). What did arrive came whole, \
             one datagram per recvfrom(). The client's socket was never bound: its first \
             sendto() picked a port, as connect() does."
        ));
    }
    Ok(())
}

/// recvfrom() on `socket` of `who`: the datagram's length and sender, or None (shown) if
/// none came before the timeout.
fn recv_datagram(
    world: &dyn World,
    who: &str,
    socket: &dyn Datagrams,
    buf: &mut [u8],
) -> Result<Option<(usize, SocketAddr)>, Failure> {
    let started = world.elapsed();
    match socket.recv_from(buf) {
        Ok(got) => Ok(Some(got)),
        // Its timeout (SO_RCVTIMEO) passed.
        Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
            show(who, format!("recvfrom() failed after {}: {}", ms(world.elapsed() - started), errno_text(&e)));
            Ok(None)
        }
        Err(e) => Err(step("recvfrom")(e)),
    }
}

/// Step 4: connect() to a port nobody listens on.
fn refusal(world: &dyn World) -> Result<(), Failure> {
    heading(4, "A refused connection: RST and ECONNREFUSED");
    explain(&format!(
        "Nothing listens on port {CLOSED_PORT}. A stack that gets a SYN for a closed port \
         answers with a RST (reset), and the client's connect() fails at once with \
         ECONNREFUSED — no waiting for a timeout."
    ));
    let closed = SocketAddr::new(IpAddr::V4(SERVER_IP), CLOSED_PORT);
    show("client", format!("connect({closed}) ..."));
    let (refused, took) = world.client().connect(closed);
    match refused {
        Ok(_) => return Err(Failure::new(format!("demo: connect({closed}) succeeded, but nothing listens there"))),
        Err(e) => show("client", format!("connect() failed after {}: {}", ms(took), errno_text(&e))),
    }
    if world.client().kind() == ClientKind::Kernel {
        let kernel_closed = SocketAddr::new(IpAddr::V4(CLIENT_IP), CLOSED_PORT);
        explain(&format!("The kernel answers the same way: now ustack connects to port {CLOSED_PORT} of the kernel."));
        let socket = world.server().socket(Type::Stream).map_err(step("socket"))?;
        show("server", format!("connect({kernel_closed}) ..."));
        let started = world.elapsed();
        match socket.connect(kernel_closed) {
            Ok(()) => return Err(Failure::new(format!("demo: connect({kernel_closed}) succeeded unexpectedly"))),
            Err(e) => {
                show("server", format!("connect() failed after {}: {}", ms(world.elapsed() - started), errno_text(&e)))
            }
        }
    }
    Ok(())
}

/// Step 5: each side shuts down its direction, the client first.
fn close(tcp: &Tcp) -> Result<(), Failure> {
    let (accepted, conn) = (tcp.accepted.as_ref(), tcp.conn.as_ref());
    heading(5, "Closing: FIN, and end of stream as recv() == 0");
    explain(
        "Each direction of a TCP connection closes on its own. shutdown(SHUT_WR) sends a FIN: \
         \"I will send nothing more\". The other side reads everything sent before it, and then \
         recv() returns 0 — end of stream, not an error. It can still send, until it closes too.",
    );
    let mut buf = [0u8; 1024];
    conn.shutdown_write().map_err(step("shutdown"))?;
    show("client", "shutdown(SHUT_WR): FIN sent");
    let n = accepted.recv(&mut buf).map_err(step("recv"))?;
    if n != 0 {
        return Err(Failure::new(format!("demo: close: expected end of stream, got {n} bytes")));
    }
    show("server", format!("recv() = 0: end of stream, the client's FIN. State: {}", accepted.state()));
    let state = conn.state_when("FIN-WAIT-2");
    show("client", format!("State: {state} (its FIN was acknowledged; it waits for the server's)"));
    explain("The server has nothing more to send, so it closes its direction too:");
    accepted.shutdown_write().map_err(step("shutdown"))?;
    let state = accepted.state();
    show("server", format!("shutdown(SHUT_WR): FIN sent. State: {state}"));
    if state != "CLOSED" {
        let state = accepted.state_when("CLOSED");
        show("server", format!("State: {state} (its FIN was acknowledged: the connection is gone)"));
    }
    let n = conn.recv(&mut buf).map_err(step("recv"))?;
    if n != 0 {
        return Err(Failure::new(format!("demo: close: expected end of stream, got {n} bytes")));
    }
    show("client", "recv() = 0: end of stream, the server's FIN");
    let state = conn.state_when("TIME-WAIT");
    show("client", format!("State: {state}"));
    explain(
        "The side that closed first waits in TIME-WAIT (2 x MSL) before forgetting the \
         connection, so that late segments of it die out before the same addresses and ports \
         can name a new one. close() then releases the sockets.",
    );
    Ok(())
}

/// send() until all of `data` is taken (a blocking send() may take part of it).
fn send_all(conn: &dyn Conn, data: &[u8]) -> Result<(), Failure> {
    let mut sent = 0;
    while sent < data.len() {
        sent += conn.send(&data[sent..]).map_err(step("send"))?;
    }
    Ok(())
}
