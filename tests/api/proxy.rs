//! A cuttable TCP proxy, for network faults between a server under test and its database or
//! Redis.

use std::net::SocketAddr;
use tokio_util::sync::CancellationToken;

/// A TCP proxy in front of a test server (PostgreSQL, Redis) that the test cuts and restores: stopping it
/// closes every connection through it and refuses new ones, as a network outage would;
/// freezing it forwards nothing more but closes nothing, as a silent network cut would.
pub struct Proxy {
    pub listen: SocketAddr,
    stop: CancellationToken,
    freeze: CancellationToken,
}

impl Proxy {
    /// Listens on `listen` (port 0: any) and forwards to `127.0.0.1:target_port`.
    pub async fn start(listen: SocketAddr, target_port: u16) -> Proxy {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .expect("proxy listens");
        let listen = listener.local_addr().expect("proxy address");
        let stop = CancellationToken::new();
        let freeze = CancellationToken::new();
        let target = ("127.0.0.1", target_port);
        let (token, frozen) = (stop.clone(), freeze.clone());
        tokio::spawn(async move {
            loop {
                let mut client = tokio::select! {
                    _ = token.cancelled() => return,
                    accepted = listener.accept() => match accepted {
                        Ok((client, _)) => client,
                        Err(_) => continue,
                    },
                };
                let (token, frozen) = (token.clone(), frozen.clone());
                tokio::spawn(async move {
                    if frozen.is_cancelled() {
                        return token.cancelled().await;
                    }
                    let Ok(mut server) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = token.cancelled() => {}
                        // Holds both sockets open without forwarding until stopped.
                        _ = frozen.cancelled() => token.cancelled().await,
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                    }
                });
            }
        });
        Proxy {
            listen,
            stop,
            freeze,
        }
    }

    pub fn cut(&self) {
        self.stop.cancel();
    }

    pub fn freeze(&self) {
        self.freeze.cancel();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
