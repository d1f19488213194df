//! A minimal HTTP/1.1 server for `GET /metrics`: one request per connection, answered and
//! closed. Enough for Prometheus, curl and a browser, and nothing more.
use std::{net::SocketAddr, sync::Arc, time::Duration};

use prometheus_client::registry::Registry;
use thiserror::Error;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
    sync::Semaphore,
    time::timeout,
};

/// Longest request head read.
const MAX_HEAD: usize = 8192;
/// A client gets this long to send its request and read the answer.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; more wait to be accepted.
const MAX_CONNECTIONS: usize = 16;

const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Debug, Error)]
pub enum MetricsError {
    #[error("cannot serve metrics on {addr} (--metrics-addr): {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Listens on `addr` (port 0 picks a free port: see `local_addr`).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, MetricsError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| MetricsError::Bind { addr, source })
}

/// Serves `registry` until the runtime stops.
pub async fn serve(listener: TcpListener, registry: Arc<Registry>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                log::debug!("metrics: accept: {error}");
                // Out of descriptors and the like: do not spin.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let registry = Arc::clone(&registry);
        tokio::spawn(async move {
            if let Err(error) = timeout(CLIENT_TIMEOUT, connection(stream, &registry)).await {
                log::debug!("metrics: client too slow: {error}");
            }
            drop(slot);
        });
    }
}

async fn connection(mut stream: TcpStream, registry: &Registry) {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head_complete(&head) && head.len() < MAX_HEAD {
        match stream.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
            Err(error) => {
                log::debug!("metrics: read: {error}");
                return;
            }
        }
    }
    let response = respond(&head, registry);
    if let Err(error) = stream.write_all(&response).await {
        log::debug!("metrics: write: {error}");
        return;
    }
    let _ = stream.shutdown().await;
}

fn head_complete(head: &[u8]) -> bool {
    head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n")
}

/// The whole response to a request head.
pub fn respond(head: &[u8], registry: &Registry) -> Vec<u8> {
    let text = String::from_utf8_lossy(head);
    let request_line = text.lines().next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return plain(400, "Bad Request", "bad request\n", true);
    };
    if !version.starts_with("HTTP/1.") {
        return plain(400, "Bad Request", "HTTP/1.x only\n", true);
    }
    let path = target.split('?').next().unwrap_or_default();
    let with_body = method != "HEAD";
    match (method, path) {
        ("GET" | "HEAD", "/metrics") => {
            let mut body = String::new();
            match prometheus_client::encoding::text::encode(&mut body, registry) {
                Ok(()) => response(200, "OK", CONTENT_TYPE, body.as_bytes(), with_body),
                Err(_) => plain(500, "Internal Server Error", "cannot encode\n", with_body),
            }
        }
        ("GET" | "HEAD", "/") => {
            plain(200, "OK", "leaktrace: metrics are at /metrics\n", with_body)
        }
        ("GET" | "HEAD", _) => plain(404, "Not Found", "not found: try /metrics\n", with_body),
        _ => plain(405, "Method Not Allowed", "GET only\n", true),
    }
}

fn plain(code: u16, reason: &str, body: &str, with_body: bool) -> Vec<u8> {
    response(
        code,
        reason,
        "text/plain; charset=utf-8",
        body.as_bytes(),
        with_body,
    )
}

fn response(code: u16, reason: &str, content_type: &str, body: &[u8], with_body: bool) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if with_body {
        out.extend_from_slice(body);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry() -> Registry {
        let mut registry = Registry::with_prefix("leaktrace");
        let counter: prometheus_client::metrics::counter::Counter = Default::default();
        counter.inc_by(3);
        registry.register("frees_seen", "Frees", counter);
        registry
    }

    fn text(response: &[u8]) -> String {
        String::from_utf8(response.to_vec()).expect("utf-8")
    }

    #[test]
    fn serves_metrics() {
        let r = text(&respond(
            b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n",
            &registry(),
        ));
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert!(
            r.contains(&format!("Content-Type: {CONTENT_TYPE}\r\n")),
            "{r}"
        );
        let (head, body) = r.split_once("\r\n\r\n").expect("head and body");
        assert!(
            head.contains(&format!("Content-Length: {}", body.len())),
            "{r}"
        );
        assert!(body.contains("leaktrace_frees_seen_total 3\n"), "{body}");
        assert!(body.ends_with("# EOF\n"), "{body}");

        let with_query = text(&respond(b"GET /metrics?x=1 HTTP/1.0\n\n", &registry()));
        assert!(with_query.starts_with("HTTP/1.1 200"), "{with_query}");
        let head_only = text(&respond(b"HEAD /metrics HTTP/1.1\r\n\r\n", &registry()));
        assert!(head_only.ends_with("\r\n\r\n"), "{head_only}");
        assert!(!head_only.contains("# EOF"));
    }

    #[test]
    fn refuses_the_rest() {
        for (request, status) in [
            (&b"GET /other HTTP/1.1\r\n\r\n"[..], "404"),
            (b"POST /metrics HTTP/1.1\r\n\r\n", "405"),
            (b"GET /metrics\r\n\r\n", "400"),
            (b"GET /metrics SPDY/3\r\n\r\n", "400"),
            (b"", "400"),
            (b"\xff\xfe garbage", "400"),
        ] {
            let r = text(&respond(request, &registry()));
            assert!(
                r.starts_with(&format!("HTTP/1.1 {status} ")),
                "{request:?}: {r}"
            );
        }
    }

    #[tokio::test]
    async fn answers_over_tcp() {
        let listener = bind("127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("local addr");
        tokio::spawn(serve(listener, Arc::new(registry())));
        let mut client = TcpStream::connect(addr).await.expect("connect");
        client
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n")
            .await
            .expect("send");
        let mut answer = String::new();
        client.read_to_string(&mut answer).await.expect("read");
        assert!(answer.contains("leaktrace_frees_seen_total 3"), "{answer}");

        let taken = bind(addr).await.expect_err("port in use");
        assert!(taken.to_string().contains("--metrics-addr"), "{taken}");
    }
}
