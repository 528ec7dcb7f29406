//! A real JetStream-enabled `nats-server` for the tests: started on a free loopback port with
//! its store in a temporary folder, stopped (SIGKILL) when dropped, restartable on the same port
//! and store. The binary is `$NATS_SERVER`, else `.tools/nats/bin/nats-server` as installed by
//! `scripts/ensure-nats.sh`.

use std::{
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

/// A running `nats-server -js`.
pub struct NatsServer {
    pub port: u16,
    child: Option<Child>,
    store: tempfile::TempDir,
}

fn binary() -> PathBuf {
    std::env::var_os("NATS_SERVER").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".tools/nats/bin/nats-server"),
        PathBuf::from,
    )
}

impl NatsServer {
    /// Starts a server on a free loopback port; panics with the fix if the binary is missing.
    pub fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut server = Self {
            port,
            child: None,
            store: tempfile::tempdir().unwrap(),
        };
        server.restart();
        server
    }

    /// The URL receivers connect to.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the server at once (SIGKILL), keeping its store.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and store, and waits until it accepts
    /// connections.
    pub fn restart(&mut self) {
        self.kill();
        let binary = binary();
        let child = Command::new(&binary)
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-sd",
            ])
            .arg(self.store.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| {
                panic!(
                    "starting {}: {error} (run scripts/ensure-nats.sh or set NATS_SERVER)",
                    binary.display()
                )
            });
        self.child = Some(child);
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("nats-server did not listen on port {}", self.port);
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}
