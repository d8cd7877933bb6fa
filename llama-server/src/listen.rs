//! The accept loop. axum's `serve` sets no timeouts, so a connection that
//! sends nothing, or half a request head, would stay open for ever; here
//! each connection is served by hyper's HTTP/1 connection with a timer and
//! a header-read timeout, and watched for a graceful shutdown.

use std::future::Future;
use std::io;
use std::pin::pin;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

/// How long a client may take to send a complete request head. hyper starts
/// the clock whenever the connection is ready for a request (on accept, and
/// after each response on a keep-alive connection), so this is also how
/// long an idle connection stays open.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Serve `router` on every connection `listener` accepts until `shutdown`
/// completes; then stop accepting (the listener is closed, so new
/// connections are refused), let every open connection finish its
/// in-flight request (idle ones close at once), and return.
///
/// # Cancel safety
///
/// Dropping the future stops accepting; connections already accepted run
/// on their own tasks until they end (or the runtime stops).
pub(crate) async fn serve_connections(
    listener: TcpListener,
    router: Router,
    header_read_timeout: Duration,
    shutdown: impl Future<Output = ()>,
) {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(header_read_timeout);
    let graceful = GracefulShutdown::new();
    let mut shutdown = pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            // The peer went away between connecting and the accept.
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                // Most likely out of file descriptors: wait for some to be
                // freed rather than spin.
                tracing::error!("accept error: {e}");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    () = &mut shutdown => break,
                }
            }
        };
        let connection = http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(router.clone()));
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            // Header timeouts, resets and malformed requests end up here;
            // each concerns one client only.
            if let Err(e) = connection.await {
                tracing::debug!("connection from {peer} ended: {e}");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
    )
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::Instant;

    use axum::body::Body;
    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;
    use tokio::sync::oneshot;
    use tokio::task::JoinHandle;

    use super::*;

    const TIMEOUT: Duration = Duration::from_millis(400);

    /// `/` answers "ok"; `/slow` streams ten chunks 100 ms apart (1 s, longer
    /// than the header timeout).
    fn router() -> Router {
        Router::new().route("/", get(|| async { "ok" })).route(
            "/slow",
            get(|| async {
                let chunks = futures::stream::unfold(0, |i| async move {
                    if i == 10 {
                        return None;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    Some((Ok::<_, io::Error>(format!("chunk {i}\n")), i + 1))
                });
                Body::from_stream(chunks)
            }),
        )
    }

    async fn start() -> (SocketAddr, oneshot::Sender<()>, JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let server = tokio::spawn(serve_connections(listener, router(), TIMEOUT, async {
            let _ = stop_rx.await;
        }));
        (addr, stop_tx, server)
    }

    /// Read until the server closes the connection (EOF or reset), for at
    /// most `limit`; returns what was read, or `None` if still open.
    async fn read_until_closed(c: &mut TcpStream, limit: Duration) -> Option<String> {
        let mut out = Vec::new();
        let read = async {
            let mut buf = [0u8; 4096];
            loop {
                match c.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => out.extend_from_slice(&buf[..n]),
                }
            }
        };
        tokio::time::timeout(limit, read).await.ok()?;
        Some(String::from_utf8_lossy(&out).into_owned())
    }

    /// Read one response to a `GET` whose body ends with `last`.
    async fn read_response(c: &mut TcpStream, last: &str) -> String {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&out).contains(last) {
            let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf)).await.unwrap().unwrap();
            assert!(n > 0, "closed before the response ended: {}", String::from_utf8_lossy(&out));
            out.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    #[tokio::test]
    async fn idle_and_half_sent_heads_are_closed_after_the_timeout() {
        let (addr, _stop, _server) = start().await;
        let t0 = Instant::now();
        let mut idle = TcpStream::connect(addr).await.unwrap();
        let mut partial = TcpStream::connect(addr).await.unwrap();
        partial.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ").await.unwrap();
        for c in [&mut idle, &mut partial] {
            assert!(read_until_closed(c, Duration::from_secs(5)).await.is_some(), "still open after 5 s");
        }
        let took = t0.elapsed();
        assert!(took >= TIMEOUT - Duration::from_millis(50), "closed before the timeout: {took:?}");
        // The server still serves.
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        assert!(read_response(&mut c, "ok").await.starts_with("HTTP/1.1 200"));
    }

    #[tokio::test]
    async fn keep_alive_and_long_streams_outlive_the_timeout() {
        let (addr, _stop, _server) = start().await;
        let mut c = TcpStream::connect(addr).await.unwrap();
        // A streamed response longer than the header timeout is not cut.
        c.write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let first = read_response(&mut c, "chunk 9\n").await;
        assert!(first.starts_with("HTTP/1.1 200"), "{first}");
        assert!(first.to_ascii_lowercase().contains("transfer-encoding: chunked"), "{first}");
        // The same connection serves a next request sent within the timeout...
        tokio::time::sleep(TIMEOUT / 2).await;
        c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        assert!(read_response(&mut c, "ok").await.starts_with("HTTP/1.1 200"));
        // ...and is closed when it stays idle.
        assert!(read_until_closed(&mut c, Duration::from_secs(5)).await.is_some(), "idle keep-alive still open");
    }

    #[tokio::test]
    async fn shutdown_finishes_in_flight_responses_and_refuses_new_connections() {
        let (addr, stop, server) = start().await;
        let mut busy = TcpStream::connect(addr).await.unwrap();
        busy.write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let mut idle = TcpStream::connect(addr).await.unwrap();
        // Let the server accept both and start the response.
        tokio::time::sleep(Duration::from_millis(150)).await;
        let t0 = Instant::now();
        stop.send(()).unwrap();
        // The idle connection is closed at once, long before its timeout.
        assert!(read_until_closed(&mut idle, TIMEOUT / 2).await.is_some(), "idle connection kept open on shutdown");
        // The in-flight response runs to its end, then the connection closes.
        let rest = read_until_closed(&mut busy, Duration::from_secs(5)).await.expect("in-flight response ends");
        assert!(rest.contains("chunk 9\n") && rest.ends_with("0\r\n\r\n"), "response cut short: {rest}");
        tokio::time::timeout(Duration::from_secs(5), server).await.expect("serve returns").unwrap();
        assert!(t0.elapsed() >= Duration::from_millis(500), "returned before the response ended");
        assert!(TcpStream::connect(addr).await.is_err(), "a new connection was accepted after shutdown");
    }
}
