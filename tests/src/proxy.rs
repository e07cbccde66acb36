//! A TCP proxy for fault injection: sits between agents and the coordinator
//! and can drop every connection, stall them (stop carrying bytes while
//! keeping them open), hold back the coordinator's replies only (results
//! arrive, their acknowledgements do not), refuse new ones, or point at a new upstream (a
//! coordinator restarted on another port).

use std::io::{Read as _, Write as _};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Default)]
struct State {
    upstream: Mutex<String>,
    stalled: AtomicBool,
    /// Stalls the coordinator-to-agent direction only.
    replies_held: AtomicBool,
    refusing: AtomicBool,
    /// Both ends of every live connection, to cut them at once.
    open: Mutex<Vec<TcpStream>>,
}

#[derive(Debug)]
pub struct FaultProxy {
    /// `127.0.0.1:PORT` agents dial.
    pub addr: String,
    state: Arc<State>,
}

impl FaultProxy {
    pub fn start(upstream: &str) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("proxy bind");
        let addr = listener.local_addr().expect("proxy addr").to_string();
        let state = Arc::new(State::default());
        *state.upstream.lock().expect("lock") = upstream.to_string();
        let shared = state.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                if shared.refusing.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let target = shared.upstream.lock().expect("lock").clone();
                let Ok(server) = TcpStream::connect(&target) else {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                if let (Ok(c), Ok(s)) = (client.try_clone(), server.try_clone()) {
                    shared.open.lock().expect("lock").extend([c, s]);
                }
                for (from, to, reply) in [(&client, &server, false), (&server, &client, true)] {
                    let (Ok(from), Ok(to)) = (from.try_clone(), to.try_clone()) else {
                        continue;
                    };
                    let state = shared.clone();
                    std::thread::spawn(move || pump(from, to, reply, &state));
                }
            }
        });
        FaultProxy { addr, state }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Cuts every open connection (both directions, like a network reset).
    pub fn drop_connections(&self) {
        for s in self.state.open.lock().expect("lock").drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    /// Stops (or resumes) carrying bytes; connections stay open.
    pub fn stall(&self, on: bool) {
        self.state.stalled.store(on, Ordering::SeqCst);
    }

    /// Stops (or resumes) carrying the coordinator's bytes to the agents;
    /// the agents' bytes still arrive.
    pub fn hold_replies(&self, on: bool) {
        self.state.replies_held.store(on, Ordering::SeqCst);
    }

    /// Closes new connections at once while on.
    pub fn refuse(&self, on: bool) {
        self.state.refusing.store(on, Ordering::SeqCst);
    }

    /// Sends new connections to another address.
    pub fn set_upstream(&self, upstream: &str) {
        *self.state.upstream.lock().expect("lock") = upstream.to_string();
    }
}

/// Carries bytes one way; `reply` is the coordinator-to-agent direction.
fn pump(mut from: TcpStream, mut to: TcpStream, reply: bool, state: &State) {
    let held = || {
        state.stalled.load(Ordering::SeqCst) || (reply && state.replies_held.load(Ordering::SeqCst))
    };
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        while held() {
            std::thread::sleep(Duration::from_millis(20));
        }
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                // Bytes read just before a stall began wait for its end too.
                while held() {
                    std::thread::sleep(Duration::from_millis(20));
                }
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}
