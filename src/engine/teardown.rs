//! Tearing sockets down: what close() of the last handle, or the end of the stack, does.

use super::ports::Holder;
use super::{Engine, HashMap, Owner, SockId, SockState, is_finished};

/// Removes socket `id` from a by-port index (listeners, UDP sockets).
pub fn unindex(index: &mut HashMap<u16, Vec<SockId>>, port: u16, id: SockId) {
    if let Some(ids) = index.get_mut(&port) {
        ids.retain(|&other| other != id);
        if ids.is_empty() {
            index.remove(&port);
        }
    }
}

impl Engine {
    /// Tears a socket down once its last handle is closed.
    pub(super) fn release(&mut self, id: SockId) {
        let Some(e) = self.entries.get_mut(&id) else { return };
        e.refs -= 1;
        if e.refs > 0 {
            return;
        }
        let e = self.entries.remove(&id).expect("present above");
        let proto = e.ty.proto();
        let me = Holder::Socket { id, listening: matches!(e.state, SockState::Listening(_)) };
        match e.state {
            SockState::Idle => {}
            SockState::Listening(l) => self.unlisten(id, e.local, l),
            SockState::Connected(handle) => {
                let socket = self.tcp_mut(handle);
                let finished = is_finished(socket);
                // SO_LINGER of zero resets, as unread data does (Linux's abortive close).
                let linger_zero = e.opts.linger == Some(std::time::Duration::ZERO);
                if socket.recv_queue() > 0 || linger_zero {
                    socket.abort();
                } else {
                    socket.close();
                }
                if let Some(conn) = self.conns.get_mut(&handle) {
                    conn.owner = Owner::Orphan;
                    if !conn.holds_port {
                        if let Some(local) = e.local {
                            self.ports.transfer(proto, local.port(), me, Holder::Connection(handle), e.reuse_addr);
                        }
                        conn.holds_port = true;
                    }
                }
                if finished {
                    self.free_conn(handle);
                } else {
                    self.dirty.push(handle);
                }
            }
            SockState::Udp { handle, .. } => {
                if let Some(local) = e.local {
                    unindex(&mut self.udp_ports, local.port(), id);
                }
                self.generation += 1;
                // Datagrams sendto() already accepted still go out, as they would from Linux;
                // the port stays held until they have.
                if self.udp(handle).send_queue() > 0 {
                    if let Some(local) = e.local {
                        self.ports.transfer(proto, local.port(), me, Holder::Connection(handle), e.reuse_addr);
                        self.udp_draining.push((handle, local.port()));
                    }
                } else {
                    self.remove_socket(handle);
                }
            }
        }
        if let Some(local) = e.local {
            self.ports.release(proto, local.port(), me);
        }
    }
}
