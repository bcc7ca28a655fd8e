//! The console's accept loop, with the bounds a listener reachable from a
//! network needs: at most [`MAX_CONNECTIONS`] at once (meshd's file
//! descriptors also carry its control and data planes), a client that has
//! not sent its request headers within [`HEADER_TIMEOUT`] is dropped, and
//! no connection outlives [`MAX_CONNECTION_AGE`]. Every connection is a
//! task of a set the loop owns, so ending the loop (a reload that moves or
//! removes the listener) closes them all at once: a page polling on a
//! kept-alive connection does not go on under the old access rule.

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::debug;

pub const MAX_CONNECTIONS: usize = 64;
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Pages reconnect on their next poll.
pub const MAX_CONNECTION_AGE: Duration = Duration::from_secs(300);
/// How long a connection at its age limit may finish its request.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Serves `app` on `listener` until the task running it is aborted.
pub async fn serve(listener: TcpListener, app: Router) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut connections = JoinSet::new();
    loop {
        // Wait for a free slot (reaping finished connections meanwhile),
        // then for a connection.
        let permit = loop {
            tokio::select! {
                permit = slots.clone().acquire_owned() => match permit {
                    Ok(p) => break p,
                    Err(_) => return,
                },
                Some(_) = connections.join_next() => {}
            }
        };
        let (stream, from) = loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(a) => break a,
                    Err(e) => {
                        // Out of descriptors, or the client left: go on.
                        debug!("console accept: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                Some(_) = connections.join_next() => {}
            }
        };
        let service = TowerToHyperService::new(app.clone());
        connections.spawn(async move {
            let _slot = permit;
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                res = conn.as_mut() => {
                    if let Err(e) = res {
                        debug!(%from, "console connection: {e}");
                    }
                }
                () = tokio::time::sleep(MAX_CONNECTION_AGE) => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(CLOSE_GRACE, conn).await;
                }
            }
        });
    }
}
