//! The admin HTTP listener, for operators and their monitoring, never for clients:
//!
//! | path | answers |
//! |---|---|
//! | `GET /healthz` | `200 ok` while the process serves (liveness) |
//! | `GET /readyz` | `200 ready` if the bus to the other nodes is up (cluster mode) and a tiny write commits within [`READY_TIMEOUT`], else `503` (readiness: the database is writable, the node can wake the others) |
//! | `GET /metrics` | every [`crate::metrics`] value, Prometheus text format 0.0.4 |
//!
//! A deliberately small HTTP/1.1 server: one request per connection (`Connection:
//! close`), `GET` and `HEAD` only, the request head bounded in size
//! ([`MAX_REQUEST_BYTES`]) and time ([`REQUEST_TIMEOUT`]), at most
//! [`MAX_ADMIN_CONNECTIONS`] at once. It listens on loopback unless the operator allows
//! otherwise (`--admin-allow-remote`), because `/metrics` reveals traffic volumes.
//!
//! [`render_stats`] formats `parley-server admin stats`, which reads the database file
//! directly rather than asking a running server.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::Clock;
use crate::context::Shared;
use crate::metrics::Sampled;
use crate::store::sqlite::DatabaseStats;

/// Most admin connections served at once; further ones wait in the backlog.
pub const MAX_ADMIN_CONNECTIONS: usize = 16;

/// Longest an admin client may take to send its request head.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Largest request head read; longer requests are answered `431`.
pub const MAX_REQUEST_BYTES: usize = 8 * 1024;

/// Longest `/readyz` waits for its probe write to commit before answering `503`.
pub const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// Longest `/metrics` waits for the store to count queued envelopes; after that the
/// scrape is answered without `parley_queue_depth`.
pub const QUEUE_DEPTH_TIMEOUT: Duration = Duration::from_secs(2);

/// Serves admin requests on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
) {
    let limit = Arc::new(Semaphore::new(MAX_ADMIN_CONNECTIONS));
    loop {
        let Some((permit, accepted)) =
            crate::server::next_connection(&listener, &limit, &shutdown).await
        else {
            return;
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "admin accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let shared = shared.clone();
        tracker.spawn(async move {
            if let Err(e) = answer(stream, &shared).await {
                tracing::debug!(error = %e, "admin request failed");
            }
            drop(permit);
        });
    }
}

/// A response: status line, content type, body.
struct Response {
    status: &'static str,
    content_type: &'static str,
    body: String,
}

impl Response {
    fn text(status: &'static str, body: impl Into<String>) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
        }
    }
}

async fn answer(mut stream: TcpStream, shared: &Shared) -> std::io::Result<()> {
    let head = tokio::time::timeout(REQUEST_TIMEOUT, read_head(&mut stream)).await;
    let (response, head_only) = match head {
        Err(_) => (
            Response::text("408 Request Timeout", "request timeout\n"),
            false,
        ),
        Ok(Err(e)) => return Err(e),
        Ok(Ok(None)) => (
            Response::text("431 Request Header Fields Too Large", "request too large\n"),
            false,
        ),
        Ok(Ok(Some(head))) => match parse_request_line(&head) {
            None => (Response::text("400 Bad Request", "bad request\n"), false),
            Some((method, path)) => {
                let head_only = method == "HEAD";
                if method != "GET" && !head_only {
                    (
                        Response::text("405 Method Not Allowed", "GET or HEAD only\n"),
                        false,
                    )
                } else {
                    (route(path, shared).await, head_only)
                }
            }
        },
    };
    let mut out = format!(
        "HTTP/1.1 {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
        response.status,
        response.content_type,
        response.body.len()
    );
    if !head_only {
        out.push_str(&response.body);
    }
    stream.write_all(out.as_bytes()).await?;
    stream.shutdown().await
}

async fn route(path: &str, shared: &Shared) -> Response {
    let path = path.split('?').next().unwrap_or(path);
    match path {
        "/healthz" => Response::text("200 OK", "ok\n"),
        "/readyz" => {
            if let Some(why) = shared.presence.unreachable() {
                return Response::text("503 Service Unavailable", format!("not ready: {why}\n"));
            }
            match tokio::time::timeout(READY_TIMEOUT, shared.store.check_writable()).await {
                Ok(Ok(())) => Response::text("200 OK", "ready\n"),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "readiness probe: the database is not writable");
                    Response::text(
                        "503 Service Unavailable",
                        format!("not ready: database not writable ({e})\n"),
                    )
                }
                Err(_) => Response::text(
                    "503 Service Unavailable",
                    "not ready: the database did not commit in time\n",
                ),
            }
        }
        "/metrics" => {
            let queued_envelopes =
                match tokio::time::timeout(QUEUE_DEPTH_TIMEOUT, shared.store.queue_depth()).await {
                    Ok(Ok(n)) => Some(n),
                    _ => None,
                };
            Response {
                status: "200 OK",
                content_type: "text/plain; version=0.0.4; charset=utf-8",
                body: shared.metrics.render(Sampled {
                    queued_envelopes,
                    store_load: shared.store.load(),
                }),
            }
        }
        _ => Response::text(
            "404 Not Found",
            "not found: try /healthz, /readyz or /metrics\n",
        ),
    }
}

/// `parley-server admin stats` output: one `name: value` line each.
pub fn render_stats(stats: &DatabaseStats) -> String {
    let oldest = match stats.oldest_queued_at_ms {
        Some(at) => format!(
            "{} s ago",
            Clock::system().now_ms().saturating_sub(at) / 1000
        ),
        None => "none".to_owned(),
    };
    format!(
        "database: {}
         schema_version: {}
         file_bytes: {}
         wal_bytes: {}
         accounts: {}
         devices: {}
         queued_envelopes: {}
         oldest_queued_envelope: {oldest}
         one_time_prekeys: {}
         dedup_entries: {}
",
        stats.path.display(),
        stats.schema_version,
        stats.file_bytes,
        stats.wal_bytes,
        stats.accounts,
        stats.devices,
        stats.queued_envelopes,
        stats.one_time_prekeys,
        stats.dedup_entries,
    )
}

/// Reads up to the end of the request head; `None` if it is longer than allowed.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<Option<Vec<u8>>> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        head.extend_from_slice(buf.get(..n).unwrap_or_default());
        if head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n") {
            return Ok(Some(head));
        }
        if head.len() > MAX_REQUEST_BYTES {
            return Ok(None);
        }
    }
}

/// The method and target of `METHOD TARGET HTTP/1.x`.
fn parse_request_line(head: &[u8]) -> Option<(&str, &str)> {
    let line = head.split(|b| *b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?.trim_end_matches('\r');
    let mut parts = line.split(' ');
    let method = parts.next()?;
    let target = parts.next()?;
    let version = parts.next()?;
    if parts.next().is_some() || !version.starts_with("HTTP/1.") || !target.starts_with('/') {
        return None;
    }
    Some((method, target))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines_parse_and_junk_does_not() {
        assert_eq!(
            parse_request_line(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Some(("GET", "/metrics"))
        );
        assert_eq!(parse_request_line(b"GET /metrics\r\n\r\n"), None);
        assert_eq!(parse_request_line(b"GET metrics HTTP/1.1\r\n\r\n"), None);
        assert_eq!(parse_request_line(b"\xff\xfe\r\n\r\n"), None);
    }
}
