//! The adpipe receiver: the HTTP endpoint partners call.
//!
//! ```text
//! http      routes and the request handler (warp)
//! partner   one partner's compiled source, auth, limits and producer
//! producer  events ─▶ KPL-aggregated, shard-aware batch puts, acknowledged per request
//! reply     success bodies, the pixel, errors as JSON with a reason
//! server    the accept loop: capped connections with capped buffers, a graceful stop
//! metrics   every metric, on an explicit registry
//! ```
//!
//! The receiver is backend-agnostic: it writes to any [`adpipe_core::stream::StreamWriter`],
//! the Kinesis one in the cloud or the embedded log of `adpipe local`.

pub mod http;
pub mod metrics;
pub mod partner;
pub mod producer;
pub mod reply;
pub mod server;

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;

pub use http::{ReceiverState, routes};
use metrics::ConnectionMetrics;

/// Serves `state` on `listener` until `shutdown` resolves; then stops taking events, lets
/// requests in progress finish, and sends everything the producers still hold before it
/// returns. Nothing acknowledged is lost by a graceful stop.
pub async fn serve(
    listener: TcpListener,
    state: Arc<ReceiverState>,
    producers: Vec<tokio::task::JoinHandle<()>>,
    connections: ConnectionMetrics,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let draining = state.clone();
    let signal = async move {
        shutdown.await;
        draining.start_draining();
        tracing::info!("draining: finishing requests in progress");
    };
    server::run(listener, routes(state.clone()), connections, signal).await;
    for partner in state.partners() {
        partner.producer.close();
    }
    for task in producers {
        if let Err(e) = task.await {
            tracing::error!(error = %e, "a producer stopped abnormally");
        }
    }
    tracing::info!("receiver stopped; every accepted event was handed to the stream");
}
