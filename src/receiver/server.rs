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
            // Well under the usual 1,024 open files, leaving room for the queue and sinks.
            max_connections: 512,
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
