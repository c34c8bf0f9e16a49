//! The peers: other real-time servers run through the same scenarios as Signet in the same run
//! (`--peer NAME[=COMMAND]`), so "faster than the alternatives" is a measurement. Each is a small
//! program under `clients/bench/peers/` that listens on the address given as its argument and
//! prints `listening on IP:PORT` first, exactly as the baseline server started by `--compare`
//! does ([`ServerChild`] starts both).
//!
//! - `socketioxide`: Socket.IO in Rust (tokio, hyper via axum), driven by [`crate::socketio`].
//! - `socketio-node`: Node's `socket.io` 4.8, driven the same way.
//! - `aiosignalr`: a Python SignalR server, the same protocol as Signet, driven by the very same
//!   SignalR client code (negotiate, upgrade, handshake, `Echo`, `BroadcastMessage`).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Stdio};

/// The bearer token sent to a SignalR peer: aiosignalr has no authentication of its own and
/// ignores it; a fixed value keeps the request the same shape as Signet's.
pub const PEER_TOKEN: &str = "peer-without-authentication";

/// A peer server the scenarios can run against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Peer {
    Socketioxide,
    SocketioNode,
    Aiosignalr,
}

impl Peer {
    pub fn name(self) -> &'static str {
        match self {
            Self::Socketioxide => "socketioxide",
            Self::SocketioNode => "socketio-node",
            Self::Aiosignalr => "aiosignalr",
        }
    }

    /// SignalR (driven like Signet) rather than Socket.IO.
    pub fn speaks_signalr(self) -> bool {
        self == Self::Aiosignalr
    }

    /// How the peer is configured, stated in every JSON line that measures it.
    pub fn configuration(self) -> &'static str {
        match self {
            Self::Socketioxide => {
                "socketioxide 0.18 on axum 0.8, default SocketIo config (Engine.IO v4, ping 25 s), \
                 tokio multi-thread runtime with one worker per core; events echo (ack) and \
                 broadcast (io.emit to all, then ack)"
            }
            Self::SocketioNode => {
                "socket.io 4.8.4 on Node.js, one process, transports [websocket], \
                 perMessageDeflate false, other options default (ping 25 s); events echo (ack) \
                 and broadcast (io.emit to all, then ack)"
            }
            Self::Aiosignalr => {
                "aiosignalr 0.1.1 on aiohttp 3.14, one Python process (one event loop), default \
                 ServerOptions (1 parallel invocation, keep-alive 15 s) but a client timeout of \
                 120 s (the generator's connections are silent while the others open), no \
                 authentication; hub /hubs/home with Echo and BroadcastMessage -> SystemMessage"
            }
        }
    }

    /// The scenarios the peer implements (the others need Signet's identity, roles or envelopes).
    pub fn supports(self, scenario: &str) -> bool {
        matches!(scenario, "connect" | "idle" | "echo" | "broadcast")
    }

    /// The command started when `--peer NAME` gives none, relative to the repository root.
    fn default_command(self) -> Vec<String> {
        let words: &[&str] = match self {
            Self::Socketioxide => &["target/peers/release/signet-peer-socketioxide"],
            Self::SocketioNode => &["node", "clients/bench/peers/socketio-node/server.mjs"],
            Self::Aiosignalr => &["python3", "clients/bench/peers/aiosignalr/server.py"],
        };
        words.iter().map(|word| word.to_string()).collect()
    }
}

/// `--peer NAME[=COMMAND]`: which peer, and the command that starts it (split on whitespace;
/// the listen address is appended).
#[derive(Debug, Clone)]
pub struct PeerSpec {
    pub peer: Peer,
    pub command: Vec<String>,
}

impl PeerSpec {
    pub fn parse(text: &str) -> Result<Self, String> {
        let (name, command) = match text.split_once('=') {
            Some((name, command)) => (name, Some(command)),
            None => (text, None),
        };
        let peer = <Peer as clap::ValueEnum>::from_str(name.trim(), true).map_err(|_| {
            format!("unknown peer `{name}` (socketioxide, socketio-node or aiosignalr)")
        })?;
        let command = match command {
            Some(command) => command.split_whitespace().map(str::to_string).collect(),
            None => peer.default_command(),
        };
        if command.is_empty() {
            return Err(format!("--peer {name}=: the command is empty"));
        }
        Ok(Self { peer, command })
    }
}

/// A server in a child process (so its memory and CPU are its own), killed on drop: the
/// baseline of `--compare`, or a peer. It must print `listening on IP:PORT` as its first line.
pub struct ServerChild {
    child: Child,
    pub address: SocketAddr,
}

impl ServerChild {
    /// Starts `program args... ` and waits for its first line.
    pub fn spawn(what: &str, program: &str, args: &[String]) -> Result<Self, String> {
        let mut child = std::process::Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start the {what} (`{program}`): {e}"))?;
        let mut line = String::new();
        if let Some(stdout) = child.stdout.take() {
            let _ = BufReader::new(stdout).read_line(&mut line);
        }
        let address = line
            .trim()
            .strip_prefix("listening on ")
            .and_then(|a| a.parse().ok());
        match address {
            Some(address) => Ok(Self { child, address }),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                Err(format!(
                    "the {what} did not start (it said `{}`)",
                    line.trim()
                ))
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ServerChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_is_named_with_or_without_its_command() {
        let spec = PeerSpec::parse("socketio-node").expect("known peer");
        assert_eq!(spec.peer, Peer::SocketioNode);
        assert_eq!(spec.command[0], "node");
        let spec = PeerSpec::parse("aiosignalr=/tmp/venv/bin/python server.py").expect("parses");
        assert_eq!(spec.peer, Peer::Aiosignalr);
        assert_eq!(spec.command, ["/tmp/venv/bin/python", "server.py"]);
        assert!(PeerSpec::parse("centrifugo").is_err());
        assert!(PeerSpec::parse("socketioxide=").is_err());
    }
}
