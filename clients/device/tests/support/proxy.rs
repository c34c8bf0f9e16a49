//! A TCP proxy in front of the server that a test can cut: every open connection is dropped and
//! new ones are refused for a while, as in a short network outage.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::Instant;

#[derive(Default)]
struct State {
    links: Vec<JoinHandle<()>>,
    down_until: Option<Instant>,
}

pub struct Proxy {
    pub address: SocketAddr,
    state: Arc<Mutex<State>>,
    accept: JoinHandle<()>,
}

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy binds");
        let address = listener.local_addr().expect("proxy address");
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let mut state = shared.lock().expect("proxy state");
                if state.down_until.is_some_and(|until| Instant::now() < until) {
                    continue; // dropped: the connection is refused
                }
                state.links.retain(|link| !link.is_finished());
                state.links.push(tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                }));
            }
        });
        Self {
            address,
            state,
            accept,
        }
    }

    /// Drops every open connection and refuses new ones for `outage`.
    pub fn cut(&self, outage: Duration) {
        let mut state = self.state.lock().expect("proxy state");
        state.down_until = Some(Instant::now() + outage);
        for link in state.links.drain(..) {
            link.abort();
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}
