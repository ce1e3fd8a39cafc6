//! The accept loop: one hyper connection per client (HTTP/1.1, or HTTP/2 with prior
//! knowledge, as under `warp::serve`), each with a capped read buffer and `TCP_NODELAY`, at
//! most [`MAX_CONNECTIONS`] at once, all watched for a graceful stop.
//!
//! ```text
//! accept ─▶ slot ─▶ TCP_NODELAY ─┬─ served (≤ MAX_CONNECTIONS): keep-alive, read buffer ≤ 8 KiB,
//!                                │     closed after IDLE_TIMEOUT without a request
//!                                │     └─ every request: PeerAddr extension ─▶ the warp routes
//!                                └─ refused (≤ MAX_REFUSING more): one 503 + Retry-After, closed
//! no slot free ─▶ wait for one; new connections wait in the listen queue
//! shutdown ─▶ stop accepting ─▶ connections finish the request in progress, then close
//! ```
//!
//! NOTE: the receiver accepts its own connections instead of leaving that to `warp::serve`
//! because warp offers no way to configure them. With hyper's defaults a connection's read
//! buffer grows to its largest read (16 KiB after a 20-event batch) and keeps that size as
//! long as the connection lives, and small answers wait for Nagle's algorithm. Measured
//! against `warp::serve` (overload benchmark, 6,000 keep-alive connections; 10k single-event
//! requests a second, pinned, 2 runs each): peak RSS 140 vs 160 MiB when the receiver is the
//! bottleneck, median RSS 5–10 MiB lower, 72–77 vs 80–81 µs of CPU per single-event request.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, header};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower_service::Service;
use warp::Filter;
use warp::reply::Response;

use crate::metrics::ConnectionMetrics;
use crate::reply::ApiError;

/// Connections served at once. Each costs ~20 KiB while open (its read buffer, hyper's state
/// and its task), so however many a flood opens their state stays within 40 MiB: what the
/// receiver's memory bound leaves beside its in-flight requests and stream buffer. A proxy in
/// front keeps far fewer open to one receiver.
pub const MAX_CONNECTIONS: usize = 2048;
/// Connections past [`MAX_CONNECTIONS`] answered at once, each with one `503` and
/// `Retry-After` and then closed, so that a client is told to come back rather than left
/// waiting; past these, new connections wait in the listen queue until a slot frees.
const MAX_REFUSING: usize = 256;
/// How long a served connection may wait for its next request's head before it is closed, so
/// that idle keep-alive connections give their slot back. Longer than the 60 s for which an
/// ALB or ingress-nginx keeps an idle connection to its upstream, so that the proxy closes
/// it first: a receiver closing first races the proxy's next request on it, which fails.
const IDLE_TIMEOUT: Duration = Duration::from_secs(75);
/// How long a refused connection may take to send its request's head.
const REFUSE_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection's read buffer never grows past this: hyper's smallest allowed maximum, and
/// the size it starts at. Request heads larger than this are refused with 431.
const MAX_READ_BUFFER_BYTES: usize = 8 * 1024;
/// How long the loop waits after an accept error that is not one client's (such as running
/// out of file descriptors), so that it does not spin while the cause lasts.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// The client's address, as each request's extension: what `warp::addr::remote()` would
/// give if warp had accepted the connection.
#[derive(Clone, Copy, Debug)]
pub struct PeerAddr(pub SocketAddr);

/// What the next accepted connection gets, held until it closes.
enum Slot {
    Served(OwnedSemaphorePermit),
    Refused(OwnedSemaphorePermit),
}

/// A connection's slot, held while the connection is open; dropping it frees the slot and
/// counts the connection closed, however its task ends.
struct Open {
    _slot: OwnedSemaphorePermit,
    metrics: ConnectionMetrics,
}

impl Open {
    fn new(slot: OwnedSemaphorePermit, metrics: &ConnectionMetrics) -> Open {
        metrics.opened();
        Open {
            _slot: slot,
            metrics: metrics.clone(),
        }
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.metrics.closed();
    }
}

/// How many connections are served and refused at once, and how long one may idle.
#[derive(Clone, Copy, Debug)]
struct Limits {
    served: usize,
    refused: usize,
    idle_timeout: Duration,
}

/// The receiver's limits; tests use smaller ones.
const LIMITS: Limits = Limits {
    served: MAX_CONNECTIONS,
    refused: MAX_REFUSING,
    idle_timeout: IDLE_TIMEOUT,
};

/// The free slots for served and refused connections.
struct Slots {
    served: Arc<Semaphore>,
    refused: Arc<Semaphore>,
}

impl Slots {
    fn new(limits: Limits) -> Slots {
        Slots {
            served: Arc::new(Semaphore::new(limits.served)),
            refused: Arc::new(Semaphore::new(limits.refused)),
        }
    }

    /// A served slot if one is free, else a refused one, else whichever frees first.
    async fn next(&self) -> Slot {
        tokio::select! {
            biased;
            Ok(permit) = self.served.clone().acquire_owned() => Slot::Served(permit),
            Ok(permit) = self.refused.clone().acquire_owned() => Slot::Refused(permit),
            // Neither semaphore is ever closed, so the branches above always match.
            else => std::future::pending().await,
        }
    }
}

/// Serves `routes` on `listener` until `shutdown` resolves, then stops accepting and waits
/// for every open connection to finish the request it is serving.
pub async fn run(
    listener: TcpListener,
    routes: impl Filter<Extract = (Response,), Error = Infallible> + Clone + Send + Sync + 'static,
    metrics: ConnectionMetrics,
    shutdown: impl Future<Output = ()>,
) {
    accept_loop(listener, routes, LIMITS, metrics, shutdown).await;
}

async fn accept_loop(
    listener: TcpListener,
    routes: impl Filter<Extract = (Response,), Error = Infallible> + Clone + Send + Sync + 'static,
    limits: Limits,
    metrics: ConnectionMetrics,
    shutdown: impl Future<Output = ()>,
) {
    let connections = GracefulShutdown::new();
    let slots = Slots::new(limits);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) if is_one_clients_error(&e) => continue,
            Err(e) => {
                tracing::error!(error = %e, "failed to accept a connection");
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                continue;
            }
        };
        let slot = tokio::select! {
            slot = slots.next() => slot,
            () = &mut shutdown => break,
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, %peer, "failed to set TCP_NODELAY");
        }
        let watcher = connections.watcher();
        match slot {
            Slot::Served(permit) => {
                let open = Open::new(permit, &metrics);
                let routes = routes.clone();
                tokio::spawn(serve(
                    stream,
                    peer,
                    routes,
                    limits.idle_timeout,
                    watcher,
                    open,
                ));
            }
            Slot::Refused(permit) => {
                let open = Open::new(permit, &metrics);
                metrics.refused();
                tokio::spawn(refuse(stream, peer, watcher, open));
            }
        }
    }
    drop(listener);
    connections.shutdown().await;
}

/// Serves one connection's requests with `routes` until the client closes it or it has
/// waited `idle_timeout` for the next.
async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    routes: impl Filter<Extract = (Response,), Error = Infallible> + Clone + Send + Sync + 'static,
    idle_timeout: Duration,
    watcher: Watcher,
    _open: Open,
) {
    let service = warp::service(routes);
    let per_request = service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
        request.extensions_mut().insert(PeerAddr(peer));
        // Boxed: hyper keeps a slot the size of the service's future for every
        // connection, idle or not, and warp's is ~1.5 KiB; a box is 16 bytes there and
        // lives only while a request does (6,000 idle connections: 19.5 vs 21.5 KiB each).
        Box::pin(service.clone().call(request))
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .keep_alive(true)
        .max_buf_size(MAX_READ_BUFFER_BYTES)
        .timer(TokioTimer::new())
        .header_read_timeout(idle_timeout);
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), per_request);
    if let Err(e) = watcher.watch(connection).await {
        tracing::debug!(error = %e, %peer, "connection ended with an error");
    }
}

/// Answers a connection past the limit with one `503` and closes it, its body unread, as for
/// any request refused before its body.
async fn refuse(stream: TcpStream, peer: SocketAddr, watcher: Watcher, _open: Open) {
    let answer = service_fn(|_request: hyper::Request<hyper::body::Incoming>| async {
        let mut response =
            ApiError::Unavailable("too many connections open; retry".into()).into_response();
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        Ok::<_, Infallible>(response)
    });
    let connection = http1::Builder::new()
        .keep_alive(false)
        .max_buf_size(MAX_READ_BUFFER_BYTES)
        .timer(TokioTimer::new())
        .header_read_timeout(REFUSE_TIMEOUT)
        .serve_connection(TokioIo::new(stream), answer);
    if let Err(e) = watcher.watch(connection).await {
        tracing::debug!(error = %e, %peer, "refused connection ended with an error");
    }
}

/// Errors that end one client's connection attempt, not the listener's ability to accept.
fn is_one_clients_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

#[cfg(test)]
mod tests {
    use prometheus::Registry;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;
    use tokio::sync::{Notify, oneshot};
    use warp::http::StatusCode;

    use super::*;
    use crate::metrics::ReceiverMetrics;

    /// A server on a free port answering every request with `routes` within `limits`, and
    /// the registry of its metrics; the sender stops it.
    async fn start(
        routes: impl Filter<Extract = (Response,), Error = Infallible> + Clone + Send + Sync + 'static,
        limits: Limits,
    ) -> (
        SocketAddr,
        oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
        Registry,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let registry = Registry::new();
        let metrics = ReceiverMetrics::register(&registry).unwrap().connections();
        let server = tokio::spawn(accept_loop(listener, routes, limits, metrics, async {
            let _ = stopped.await;
        }));
        (addr, stop, server, registry)
    }

    /// The value of the unlabelled gauge or counter `name`.
    fn metric(registry: &Registry, name: &str) -> f64 {
        let family = registry
            .gather()
            .into_iter()
            .find(|f| f.name() == name)
            .unwrap();
        let sample = &family.get_metric()[0];
        sample.get_gauge().get_value() + sample.get_counter().get_value()
    }

    /// Sends one request on a fresh connection and reads the whole answer.
    async fn exchange(addr: SocketAddr, head_extra: &str) -> String {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let request =
            format!("GET / HTTP/1.1\r\nhost: test\r\nconnection: close\r\n{head_extra}\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        answer
    }

    /// Sends a keep-alive request on `stream` and reads its answer, which [`ok`] ends with
    /// "ok".
    async fn exchange_keeping_alive(stream: &mut TcpStream) -> String {
        stream
            .write_all(b"GET / HTTP/1.1\r\nhost: test\r\n\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        let mut chunk = [0; 1024];
        while !answer.ends_with(b"ok") {
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&answer));
            answer.extend_from_slice(&chunk[..n]);
        }
        String::from_utf8(answer).unwrap()
    }

    fn ok() -> impl Filter<Extract = (Response,), Error = Infallible> + Clone + Send + Sync {
        warp::any().map(|| Response::new("ok".into()))
    }

    fn peer_echo() -> impl Filter<Extract = (Response,), Error = Infallible> + Clone + Send + Sync {
        warp::ext::optional::<PeerAddr>().map(|peer: Option<PeerAddr>| {
            Response::new(format!("{:?}", peer.map(|p| p.0.ip())).into())
        })
    }

    #[tokio::test]
    async fn requests_carry_the_peer_address_and_oversized_heads_are_refused() {
        let (addr, stop, server, _) = start(peer_echo(), LIMITS).await;

        let answer = exchange(addr, "").await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("Some(127.0.0.1)"), "{answer}");

        let cookie = format!("cookie: {}\r\n", "c".repeat(MAX_READ_BUFFER_BYTES));
        let answer = exchange(addr, &cookie).await;
        let status = StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE;
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {}", status.as_u16())),
            "{answer}"
        );

        stop.send(()).unwrap();
        server.await.unwrap();
    }

    #[tokio::test]
    async fn a_stop_lets_the_request_in_progress_finish() {
        let started = Arc::new(Notify::new());
        let release = Arc::new(Notify::new());
        let routes = {
            let (started, release) = (started.clone(), release.clone());
            warp::any().then(move || {
                let (started, release) = (started.clone(), release.clone());
                async move {
                    started.notify_one();
                    release.notified().await;
                    Response::new("finished".into())
                }
            })
        };
        let (addr, stop, server, _) = start(routes, LIMITS).await;

        let request = tokio::spawn(exchange(addr, ""));
        started.notified().await;
        stop.send(()).unwrap();
        // The stop has taken effect once the listener is closed.
        while TcpStream::connect(addr).await.is_ok() {
            tokio::task::yield_now().await;
        }
        assert!(
            !server.is_finished(),
            "the server waits for the request in progress"
        );
        release.notify_one();
        let answer = request.await.unwrap();
        assert!(answer.ends_with("finished"), "{answer}");
        server.await.unwrap();
    }

    #[tokio::test]
    async fn connections_past_the_limit_get_503_and_idle_ones_give_their_slot_back() {
        let limits = Limits {
            served: 2,
            refused: 1,
            idle_timeout: Duration::from_secs(2),
        };
        let (addr, stop, server, registry) = start(ok(), limits).await;
        let mut served = Vec::new();
        for _ in 0..limits.served {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            let answer = exchange_keeping_alive(&mut stream).await;
            assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
            served.push(stream);
        }
        assert_eq!(metric(&registry, "adpipe_receiver_connections"), 2.0);

        let refused = exchange(addr, "").await;
        assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
        assert!(refused.contains("retry-after: 1\r\n"), "{refused}");
        assert!(
            refused.ends_with(r#"{"reason":"too many connections open; retry"}"#),
            "{refused}"
        );
        assert_eq!(
            metric(&registry, "adpipe_receiver_connections_refused_total"),
            1.0
        );

        for mut stream in served {
            let mut byte = [0; 1];
            let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut byte));
            assert_eq!(
                read.await.unwrap().unwrap(),
                0,
                "an idle connection is closed"
            );
        }
        let answer = exchange(addr, "").await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while metric(&registry, "adpipe_receiver_connections") != 0.0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "closed connections are still counted open"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }

        stop.send(()).unwrap();
        server.await.unwrap();
    }
}
