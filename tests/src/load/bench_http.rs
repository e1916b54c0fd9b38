//! The HTTP client of `happyx-load bench`: one HTTP/1.1 keep-alive connection per worker,
//! driven with hyper's connection API (no pool, no per-request URL parsing or header maps to
//! build), so the client costs as little as possible next to the host it measures, and "32
//! connections" means exactly 32 sockets, as with `wrk -c32`.
//!
//! Plain `http://` only: the bench measures a host over loopback (TLS would be measured apart).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderValue};
use hyper::{Method, Request, Uri};
use hyper_util::rt::TokioIo;

/// How long connecting, or one exchange, may take before it counts as a transport error.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(30);

/// Where requests go: the `host:port` of an `http://` URL.
#[derive(Debug, Clone)]
pub struct Target {
    authority: String,
    host_header: HeaderValue,
}

impl Target {
    /// Parses `http://host:port` (a trailing `/` is ignored).
    pub fn parse(url: &str) -> Result<Self> {
        let uri: Uri = url
            .trim_end_matches('/')
            .parse()
            .with_context(|| format!("`{url}` is not a URL"))?;
        if uri.scheme_str() != Some("http") {
            bail!("`{url}`: the bench speaks plain http:// only");
        }
        let authority = uri
            .authority()
            .with_context(|| format!("`{url}` has no host"))?;
        let port = authority.port_u16().unwrap_or(80);
        let authority = format!("{}:{port}", authority.host());
        let host_header = HeaderValue::from_str(&authority).context("host header")?;
        Ok(Self {
            authority,
            host_header,
        })
    }
}

/// One request, ready to be sent again and again.
#[derive(Clone)]
pub struct Prepared {
    method: Method,
    uri: Uri,
    auth: Option<HeaderValue>,
    json: bool,
}

impl std::fmt::Debug for Prepared {
    // The bearer token stays out of any output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared")
            .field("method", &self.method)
            .field("uri", &self.uri)
            .field("auth", &self.auth.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl Prepared {
    /// `GET path`, with a bearer token when given.
    pub fn get(path: &str, token: Option<&str>) -> Result<Self> {
        let auth = token
            .map(|t| {
                let mut v = HeaderValue::from_str(&format!("Bearer {t}"))
                    .context("the token is not a valid header value")?;
                v.set_sensitive(true);
                Ok::<_, anyhow::Error>(v)
            })
            .transpose()?;
        Ok(Self {
            method: Method::GET,
            uri: path.parse().context("request path")?,
            auth,
            json: false,
        })
    }

    /// `POST path` with a JSON body (given per request), unauthenticated.
    pub fn post_json(path: &str) -> Result<Self> {
        Ok(Self {
            method: Method::POST,
            uri: path.parse().context("request path")?,
            auth: None,
            json: true,
        })
    }
}

/// How one exchange ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// An answer with this status, its body read to the end.
    Status(u16),
    /// No answer: the connection failed or the exchange timed out. The connection is gone.
    Transport,
}

/// One keep-alive connection.
pub struct Conn {
    target: Target,
    sender: SendRequest<Full<Bytes>>,
}

impl Conn {
    pub async fn open(target: &Target) -> Result<Self> {
        let connect = async {
            let stream = tokio::net::TcpStream::connect(&target.authority).await?;
            stream.set_nodelay(true)?;
            let (sender, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            Ok::<_, anyhow::Error>(sender)
        };
        let sender = tokio::time::timeout(EXCHANGE_TIMEOUT, connect)
            .await
            .with_context(|| format!("connecting to {} timed out", target.authority))?
            .with_context(|| format!("connect to {}", target.authority))?;
        Ok(Self {
            target: target.clone(),
            sender,
        })
    }

    /// Sends `req` (with `body`) and reads the whole answer.
    pub async fn exchange(&mut self, req: &Prepared, body: Bytes) -> Outcome {
        let mut r = Request::new(Full::new(body));
        *r.method_mut() = req.method.clone();
        *r.uri_mut() = req.uri.clone();
        let h = r.headers_mut();
        h.insert(HOST, self.target.host_header.clone());
        if let Some(a) = &req.auth {
            h.insert(AUTHORIZATION, a.clone());
        }
        if req.json {
            h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        let once = async {
            self.sender.ready().await?;
            let resp = self.sender.send_request(r).await?;
            let status = resp.status().as_u16();
            resp.into_body().collect().await?;
            Ok::<_, hyper::Error>(status)
        };
        match tokio::time::timeout(EXCHANGE_TIMEOUT, once).await {
            Ok(Ok(status)) => Outcome::Status(status),
            _ => Outcome::Transport,
        }
    }

    /// Replaces a broken connection; false when the host cannot be reached.
    pub async fn reopen(&mut self) -> bool {
        match Conn::open(&self.target).await {
            Ok(c) => {
                *self = c;
                true
            }
            Err(_) => false,
        }
    }
}

/// Opens `n` connections to `target`.
pub async fn open_all(target: &Target, n: usize) -> Result<Vec<Conn>> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(Conn::open(target).await?);
    }
    Ok(out)
}

/// What one worker saw during a timed span.
#[derive(Debug, Default)]
pub struct WorkerTally {
    /// Latency of each successful exchange, in microseconds.
    pub latencies_us: Vec<u32>,
    /// Failed exchanges by kind (`http_403`, `transport`, an ingest refusal code, …).
    pub errors: BTreeMap<String, u64>,
    /// Bodies sealed while the clock ran (the pre-sealed supply ran out).
    pub sealed_late: u64,
}

impl WorkerTally {
    /// A successful exchange that started at `started`.
    pub fn record(&mut self, started: Instant) {
        let us = started.elapsed().as_micros();
        self.latencies_us
            .push(u32::try_from(us).unwrap_or(u32::MAX));
    }

    /// A failed exchange.
    pub fn fail(&mut self, what: &str) {
        *self.errors.entry(what.to_string()).or_default() += 1;
    }
}

/// What one worker of the reads pair does: `req` again and again until `until`, counting
/// answers other than 200 as failures.
pub async fn read_worker(mut conn: Conn, req: Prepared, until: Instant) -> (Conn, WorkerTally) {
    let mut tally = WorkerTally::default();
    while Instant::now() < until {
        let t0 = Instant::now();
        match conn.exchange(&req, Bytes::new()).await {
            Outcome::Status(200) => tally.record(t0),
            Outcome::Status(code) => tally.fail(&format!("http_{code}")),
            Outcome::Transport => {
                tally.fail("transport");
                if !conn.reopen().await {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }
    (conn, tally)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse() {
        let t = Target::parse("http://127.0.0.1:7878/").expect("parses");
        assert_eq!(t.authority, "127.0.0.1:7878");
        assert_eq!(
            Target::parse("http://localhost").expect("parses").authority,
            "localhost:80"
        );
        assert!(Target::parse("https://127.0.0.1:7878").is_err());
        assert!(Target::parse("not a url").is_err());
    }

    #[test]
    fn the_token_stays_out_of_debug() {
        let p = Prepared::get("/v1/tasks/x", Some("hx_secret_token")).expect("prepared");
        let shown = format!("{p:?}");
        assert!(!shown.contains("hx_secret_token"), "{shown}");
        assert!(shown.contains("redacted"), "{shown}");
    }
}
