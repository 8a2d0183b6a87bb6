//! Client connections: accepting, serving with every HTTP bound set, and shedding the
//! connections that do nothing when the server is full.
//!
//! hyper sets no timeout unless it is given a timer, so a client that opens connections and
//! sends half a header (slowloris) could hold every connection slot for ever. Here:
//!
//! - HTTP/1 headers must arrive within `http_header_read_timeout_ms`;
//! - a connection with no request in flight for `http_idle_timeout_ms` is closed (a
//!   keep-alive connection left open, or one that never completes a request);
//! - HTTP/2 connections are pinged every `http2_keep_alive_interval_s` and closed when a
//!   ping goes unanswered as long, and carry at most `http2_max_concurrent_streams` streams;
//! - a request body must arrive within `http_body_read_timeout_ms` (a minimum body rate:
//!   the body limit over this time), applied in the router;
//! - when all `connections_max` slots are taken, the connection idle the longest is closed
//!   to make room (one that never completed a request first), so a flood of silent
//!   connections cannot keep a new client out; only when every connection has a request in
//!   flight does a new one wait in the kernel's backlog.
//!
//! A connection is "in flight" from the moment its request's headers are read until its
//! response body is sent whole (an event stream stays in flight while it is open).

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};
use tower::{Service, ServiceExt};

/// The bounds a client connection is served under; see the module's documentation.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub connections_max: usize,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub http2_keep_alive_interval: Duration,
    pub http2_max_concurrent_streams: u32,
    /// The TLS handshake must end within this.
    pub tls_handshake_timeout: Duration,
    /// A request body must arrive whole within this.
    pub body_read_timeout: Duration,
}

/// One connection as the shedder sees it.
struct Slot {
    /// Requests whose response has not been sent whole.
    in_flight: AtomicU32,
    /// Requests begun on it.
    requests: AtomicU64,
    /// Milliseconds since the registry's start when it was last busy (accepted, or a
    /// request ended).
    idle_since_ms: AtomicU64,
    /// Told to close.
    close: Notify,
    closing: std::sync::atomic::AtomicBool,
}

/// Every open connection, to find the one to shed.
struct Registry {
    started: Instant,
    next_id: AtomicU64,
    slots: Mutex<HashMap<u64, Arc<Slot>>>,
}

impl Registry {
    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn add(&self) -> (u64, Arc<Slot>) {
        let slot = Arc::new(Slot {
            in_flight: AtomicU32::new(0),
            requests: AtomicU64::new(0),
            idle_since_ms: AtomicU64::new(self.now_ms()),
            close: Notify::new(),
            closing: std::sync::atomic::AtomicBool::new(false),
        });
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.slots.lock().expect("registry lock").insert(id, slot.clone());
        (id, slot)
    }

    fn remove(&self, id: u64) {
        self.slots.lock().expect("registry lock").remove(&id);
    }

    /// Tells the connection idle the longest to close: one that never began a request
    /// before one that did. `false` when every connection has a request in flight.
    fn shed_one(&self) -> bool {
        let slots = self.slots.lock().expect("registry lock");
        let idlest = slots
            .values()
            .filter(|s| {
                s.in_flight.load(Ordering::Acquire) == 0 && !s.closing.load(Ordering::Relaxed)
            })
            .min_by_key(|s| {
                (s.requests.load(Ordering::Relaxed) > 0, s.idle_since_ms.load(Ordering::Relaxed))
            });
        match idlest {
            Some(slot) => {
                slot.closing.store(true, Ordering::Relaxed);
                slot.close.notify_one();
                true
            }
            None => false,
        }
    }
}

/// Marks its connection's request as ended when the response body is sent (or dropped).
struct InFlight {
    slot: Arc<Slot>,
    registry: Arc<Registry>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.slot.idle_since_ms.store(self.registry.now_ms(), Ordering::Relaxed);
        self.slot.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its request in flight until it is sent whole.
struct Tracked {
    body: Body,
    _in_flight: InFlight,
}

impl http_body::Body for Tracked {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// Accepts connections until told to stop, then drains them (up to 30 s).
pub async fn serve(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    app: Router,
    mut stop: watch::Receiver<bool>,
    limits: Limits,
) {
    let graceful = GracefulShutdown::new();
    let registry = Arc::new(Registry {
        started: Instant::now(),
        next_id: AtomicU64::new(0),
        slots: Mutex::new(HashMap::new()),
    });
    // Each connection holds a permit while it lives.
    let permits = Arc::new(tokio::sync::Semaphore::new(limits.connections_max));
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(limits.http2_keep_alive_interval))
        .keep_alive_timeout(limits.http2_keep_alive_interval)
        .max_concurrent_streams(limits.http2_max_concurrent_streams);
    loop {
        let (tcp, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(_) => {
                    // Out of files, say: wait a little rather than spin.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        let permit = match permits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                // Full: make room by closing the idlest connection, and again while the
                // wait lasts (a connection may fall idle meanwhile).
                let mut waited = None;
                while waited.is_none() {
                    registry.shed_one();
                    tokio::select! {
                        permit = permits.clone().acquire_owned() => {
                            waited = Some(permit.expect("never closed"));
                        }
                        _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                        _ = stop.changed() => break,
                    }
                }
                match waited {
                    Some(permit) => permit,
                    None => break,
                }
            }
        };
        let _ = tcp.set_nodelay(true);
        let (id, slot) = registry.add();
        let service = track(app.clone(), slot.clone(), registry.clone(), limits.body_read_timeout);
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let tls = tls.clone();
        let registry = registry.clone();
        tokio::spawn(async move {
            let io = match tls {
                None => Either::Plain(tcp),
                Some(acceptor) => {
                    let handshake = acceptor.accept(tcp);
                    // A connection still shaking hands is shed like any idle one.
                    let shaken = tokio::select! {
                        done = tokio::time::timeout(limits.tls_handshake_timeout, handshake) => {
                            done.ok().and_then(Result::ok)
                        }
                        _ = slot.close.notified() => None,
                    };
                    match shaken {
                        Some(stream) => Either::Tls(Box::new(stream)),
                        None => {
                            registry.remove(id);
                            drop(permit);
                            return;
                        }
                    }
                }
            };
            let conn =
                builder.serve_connection_with_upgrades(TokioIo::new(io), service).into_owned();
            let conn = watcher.watch(conn);
            tokio::pin!(conn);
            let idle_ms = limits.idle_timeout.as_millis() as u64;
            loop {
                // Asleep until the connection could be idle long enough, then checked.
                let wait_ms = match slot.in_flight.load(Ordering::Acquire) {
                    0 => {
                        let idle = registry
                            .now_ms()
                            .saturating_sub(slot.idle_since_ms.load(Ordering::Relaxed));
                        if idle >= idle_ms {
                            break;
                        }
                        idle_ms - idle
                    }
                    _ => idle_ms,
                };
                tokio::select! {
                    _ = &mut conn => break,
                    _ = slot.close.notified() => {
                        // Told to close as the idlest: unless a request began meanwhile
                        // (this task polls the connection, so none can begin now).
                        if slot.in_flight.load(Ordering::Acquire) == 0 {
                            break;
                        }
                        slot.closing.store(false, Ordering::Relaxed);
                    }
                    _ = tokio::time::sleep(Duration::from_millis(wait_ms)) => {}
                }
            }
            registry.remove(id);
            drop(permit);
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(Duration::from_secs(30), graceful.shutdown()).await;
}

/// The router, counting each request of one connection in flight until its response body
/// is sent, with the request body's read timeout.
fn track(
    app: Router,
    slot: Arc<Slot>,
    registry: Arc<Registry>,
    body_read_timeout: Duration,
) -> hyper_util::service::TowerToHyperService<
    impl Service<
            Request<hyper::body::Incoming>,
            Response = Response<Tracked>,
            Error = std::convert::Infallible,
            Future = impl Send,
        > + Clone,
> {
    let service = tower::service_fn(move |request: Request<hyper::body::Incoming>| {
        slot.in_flight.fetch_add(1, Ordering::AcqRel);
        slot.requests.fetch_add(1, Ordering::Relaxed);
        let in_flight = InFlight { slot: slot.clone(), registry: registry.clone() };
        let app = app.clone();
        async move {
            let request = request.map(|body| {
                Body::new(Deadline {
                    body,
                    deadline: Box::pin(tokio::time::sleep(body_read_timeout)),
                })
            });
            let response = app.oneshot(request).await?;
            Ok(response.map(|body| Tracked { body, _in_flight: in_flight }))
        }
    });
    hyper_util::service::TowerToHyperService::new(service)
}

/// A request body that must arrive whole before its deadline, however it trickles in
/// (a timeout per frame would let one byte every so often hold a connection for ever).
struct Deadline {
    body: hyper::body::Incoming,
    deadline: std::pin::Pin<Box<tokio::time::Sleep>>,
}

/// The error of a body past its deadline.
#[derive(Debug)]
struct BodyTooSlow;

impl std::fmt::Display for BodyTooSlow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the request body did not arrive whole in time (http_body_read_timeout_ms)")
    }
}

impl std::error::Error for BodyTooSlow {}

impl http_body::Body for Deadline {
    type Data = bytes::Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        if self.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(Box::new(BodyTooSlow))));
        }
        std::pin::Pin::new(&mut self.body).poll_frame(cx).map_err(Into::into)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// A plain or a TLS stream.
enum Either {
    Plain(tokio::net::TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<tokio::net::TcpStream>>),
}

impl tokio::io::AsyncRead for Either {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Either::Plain(s) => std::pin::Pin::new(s).poll_read(cx, buf),
            Either::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl tokio::io::AsyncWrite for Either {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Either::Plain(s) => std::pin::Pin::new(s).poll_write(cx, buf),
            Either::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Either::Plain(s) => std::pin::Pin::new(s).poll_flush(cx),
            Either::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Either::Plain(s) => std::pin::Pin::new(s).poll_shutdown(cx),
            Either::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Either::Plain(s) => std::pin::Pin::new(s).poll_write_vectored(cx, bufs),
            Either::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Either::Plain(s) => s.is_write_vectored(),
            Either::Tls(s) => s.is_write_vectored(),
        }
    }
}
