//! How both ports accept connections: `axum::serve` has no timeouts and no connection cap, so a
//! client trickling a byte a second holds a connection (and a file descriptor) for ever, and
//! enough of them starve Strapi's calls and the probes. Each port here closes a connection
//! whose request headers are not complete within the header-read timeout (which also ends a
//! keep-alive connection idle that long), fails a request whose body is not read within the
//! body timeout, and accepts at most a fixed number of connections at once; more wait in the
//! kernel's accept backlog.

use std::{sync::Arc, time::Duration};

use axum::Router;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::GracefulShutdown,
    service::TowerToHyperService,
};
use tokio::{
    net::TcpListener,
    sync::{Semaphore, watch},
};
use tower_http::timeout::RequestBodyTimeoutLayer;

/// Limits on the connections of one port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerLimits {
    /// Time a client has to send a request's headers, counted from when the connection (or
    /// the previous response on a keep-alive connection) is ready for them: it is also the
    /// idle timeout.
    pub header_read_timeout: Duration,
    /// Time a request's body may take to arrive.
    pub body_timeout: Duration,
    /// Connections served at once.
    pub max_connections: usize,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            max_connections: 4096,
        }
    }
}

// Open files kept for everything but the two ports' connections: the queue, sink connections,
// the Kubernetes watch, logs.
const RESERVED_FILES: u64 = 256;

impl ServerLimits {
    /// Raises the process's soft open-files limit to its hard limit (as Go's runtime does; the
    /// usual soft limit of 1,024 is what a thousand idle clients exhausted), then lowers
    /// `max_connections` if both ports at their cap would still not fit in it, so accepting
    /// connections can never take the files the queue and the sinks need.
    pub fn fit_open_files_limit(&mut self) {
        use rustix::process::{Resource, getrlimit, setrlimit};
        let mut limit = getrlimit(Resource::Nofile);
        if limit.current != limit.maximum {
            let raised = rustix::process::Rlimit {
                current: limit.maximum,
                maximum: limit.maximum,
            };
            match setrlimit(Resource::Nofile, raised) {
                Ok(()) => limit = getrlimit(Resource::Nofile),
                Err(error) => tracing::warn!(%error, "cannot raise the open-files limit"),
            }
        }
        let Some(files) = limit.current else { return };
        let room = usize::try_from(files.saturating_sub(RESERVED_FILES) / 2).unwrap_or(usize::MAX);
        if self.max_connections > room {
            tracing::warn!(
                open_files = files,
                max_connections = room,
                "--max-connections lowered to fit both ports in the open-files limit"
            );
            self.max_connections = room.max(1);
        }
    }
}

/// Serves `app` on `listener` within `limits` until `stopping` turns true, then lets the
/// requests in progress finish (the caller bounds how long).
pub async fn serve(
    what: &'static str,
    listener: TcpListener,
    app: Router,
    limits: &ServerLimits,
    mut stopping: watch::Receiver<bool>,
) {
    let app = app.layer(RequestBodyTimeoutLayer::new(limits.body_timeout));
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    loop {
        let slot = tokio::select! {
            slot = Arc::clone(&slots).acquire_owned() => slot,
            _ = stopping.wait_for(|stop| *stop) => break,
        };
        let Ok(slot) = slot else { break };
        let stream = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stopping.wait_for(|stop| *stop) => break,
        };
        let stream = match stream {
            Ok((stream, _)) => stream,
            Err(error) => {
                // Out of file descriptors, typically: back off instead of spinning.
                tracing::warn!(port = what, %error, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let service = TowerToHyperService::new(app.clone());
        let connection = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            let _slot = slot;
            if let Err(error) = connection.await {
                tracing::debug!(port = what, %error, "connection closed");
            }
        });
    }
    graceful.shutdown().await;
}

#[cfg(test)]
mod tests {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

    use super::*;

    // nextest runs each test in its own process, so changing this one's limit is contained.
    #[test]
    fn the_open_files_limit_is_raised_and_the_cap_fits_in_it() {
        let hard = getrlimit(Resource::Nofile).maximum;
        let Some(hard_files) = hard else { return };
        let low = Rlimit {
            current: Some(hard_files.min(1024)),
            maximum: hard,
        };
        setrlimit(Resource::Nofile, low).unwrap();
        let mut limits = ServerLimits {
            max_connections: usize::MAX,
            ..ServerLimits::default()
        };
        limits.fit_open_files_limit();
        assert_eq!(
            getrlimit(Resource::Nofile).current,
            hard,
            "raised to the hard limit"
        );
        let fits = usize::try_from((hard_files - RESERVED_FILES) / 2).unwrap();
        assert_eq!(limits.max_connections, fits.max(1));
    }
}
