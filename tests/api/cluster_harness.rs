//! The cluster harness of issue 14: real `signet serve` processes (three by default) on one
//! Redis and one PostgreSQL database as their shared store, behind the nginx round robin of
//! [`crate::balancer`]. Each node runs under the shell watchdog of [`crate::watchdog`] with
//! `SIGKILL` as its stop signal, so [`SignetNode::kill`] is a crash (no goodbye to Redis, no
//! closing handshakes) and nothing outlives the test process.

use crate::balancer::Balancer;
use crate::helpers::TEST_SECRET;
use crate::watchdog::{free_port, spawn_watched, stop_watched};
use signet::identity::{Passwords, UserAdmin};
use signet::settings::Settings;
use signet::store::Store;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The envelope secret every node shares (server-signed commands verify on any node).
pub const CLUSTER_ENVELOPE_SECRET: &str = "cluster-harness-envelope-secret-0123456789-abcdef";

/// A node starts (migrations, Redis subscription) within this even on a loaded machine.
const START_DEADLINE: Duration = Duration::from_secs(60);

pub struct SignetCluster {
    pub nodes: Vec<SignetNode>,
    pub balancer: Balancer,
    env: Vec<(String, String)>,
}

/// One `signet serve` process.
pub struct SignetNode {
    pub id: String,
    pub address: SocketAddr,
    log: PathBuf,
    /// While this holds the watchdog's standard input open, the node runs.
    watchdog: Mutex<Option<Child>>,
}

impl SignetCluster {
    /// `count` nodes named `n1`, `n2`, ... on `redis_url` under channel prefix `prefix`, sharing
    /// a fresh PostgreSQL database, with nginx in front; `extra` settings for every node.
    pub async fn start(
        count: usize,
        redis_url: &str,
        prefix: &str,
        extra: &[(&str, &str)],
    ) -> SignetCluster {
        let store_url = crate::postgres::fresh_database().await;
        let mut env: Vec<(String, String)> = [
            ("SIGNET__SERVER__WORKERS", "1"),
            ("SIGNET__JWT__SECRET", TEST_SECRET),
            ("SIGNET__ENVELOPE__SECRET", CLUSTER_ENVELOPE_SECRET),
            // Cheap argon2 so logins are quick; the defaults are the secure ones.
            ("SIGNET__IDENTITY__PASSWORD_HASH_MEMORY_KIB", "64"),
            ("SIGNET__IDENTITY__PASSWORD_HASH_ITERATIONS", "1"),
            ("SIGNET__STORE__URL", store_url.as_str()),
            ("SIGNET__STORE__MAX_CONNECTIONS", "4"),
            ("SIGNET__CLUSTER__REDIS_URL", redis_url),
            ("SIGNET__CLUSTER__CHANNEL_PREFIX", prefix),
        ]
        .iter()
        .chain(extra)
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        env.sort();
        let mut nodes = Vec::new();
        for n in 1..=count {
            nodes.push(SignetNode::spawn(&format!("n{n}"), &env));
        }
        for node in &nodes {
            node.wait_readiness(200, START_DEADLINE).await;
        }
        let balancer = Balancer::start(&nodes.iter().map(|n| n.address).collect::<Vec<_>>());
        SignetCluster {
            nodes,
            balancer,
            env,
        }
    }

    /// Settings as the nodes have them (no listener of their own) and the shared store, for a
    /// test that provisions users itself.
    pub async fn settings_and_store(&self) -> (Settings, Arc<dyn Store>) {
        let env = self.env.iter().cloned().chain([(
            "SIGNET__SERVER__DATA_DIR".to_string(),
            std::env::temp_dir().display().to_string(),
        )]);
        let settings = signet::settings::load_from_str("", std::path::Path::new("harness"), env)
            .expect("the harness settings are valid");
        let store = signet::store::open(&settings)
            .await
            .expect("the shared store opens")
            .store;
        (settings, store)
    }

    /// Creates a user in the shared store, as `signet user add` does.
    pub async fn create_user(&self, username: &str, roles: &[&str], password: &str) {
        let (settings, store) = self.settings_and_store().await;
        let passwords = Passwords::new(&settings.identity)
            .await
            .expect("password hashing");
        let roles: Vec<String> = roles.iter().map(|r| r.to_string()).collect();
        UserAdmin::new(store, passwords)
            .add(username, &roles, password)
            .await
            .expect("user created");
    }

    /// The balancer's URL followed by `path`.
    pub fn url(&self, path: &str) -> String {
        self.balancer.url(path)
    }

    /// Every node's log and nginx's, for failure messages.
    pub fn logs(&self) -> String {
        let mut all = String::new();
        for node in &self.nodes {
            all.push_str(&format!("--- node {}\n{}\n", node.id, node.log()));
        }
        all + "--- nginx\n" + &self.balancer.error_log()
    }
}

impl SignetNode {
    fn spawn(id: &str, env: &[(String, String)]) -> SignetNode {
        let dir = tempfile::Builder::new()
            .prefix("signet-node-")
            .tempdir()
            .expect("temp dir")
            // The watchdog removes it.
            .keep();
        let port = free_port().expect("a free port");
        let address: SocketAddr = ([127, 0, 0, 1], port).into();
        let mut shell = Command::new("/bin/sh");
        shell
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("SIGNET__SERVER__LISTEN", address.to_string())
            .env("SIGNET__SERVER__DATA_DIR", &dir)
            .env("SIGNET__CLUSTER__NODE_ID", id)
            .env("RUST_LOG", "info")
            .current_dir(&dir);
        let log = dir.join("signet.log");
        let server = [env!("CARGO_BIN_EXE_signet"), "serve"];
        let watchdog = spawn_watched(shell, "KILL", &dir, &log, &server)
            .unwrap_or_else(|why| panic!("cannot start node {id}: {why}"));
        SignetNode {
            id: id.to_string(),
            address,
            log,
            watchdog: Mutex::new(Some(watchdog)),
        }
    }

    /// `GET /readyz`: its status (0 when the node does not answer).
    pub async fn readiness(&self) -> u16 {
        awc::Client::default()
            .get(self.url("/readyz"))
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    }

    /// Waits until `/readyz` answers `status` (200: store and Redis reachable), failing after
    /// `within` with the node's log.
    pub async fn wait_readiness(&self, status: u16, within: Duration) {
        let deadline = Instant::now() + within;
        while self.readiness().await != status {
            assert!(
                Instant::now() < deadline,
                "node {} did not answer {status} on /readyz within {within:?}:\n{}",
                self.id,
                self.log()
            );
            // Paces a poll for the node's readiness, not a fixed wait.
            actix_web::rt::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// This node's own URL (not through the balancer) followed by `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// Kills the process with SIGKILL, as a crash would, and waits until it is gone.
    pub fn kill(&self) {
        let taken = self.watchdog.lock().ok().and_then(|mut w| w.take());
        if let Some(mut watchdog) = taken {
            stop_watched(&mut watchdog);
        }
    }

    /// What the node logged (empty once it was killed: its directory goes with it).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for SignetNode {
    fn drop(&mut self) {
        self.kill();
    }
}
