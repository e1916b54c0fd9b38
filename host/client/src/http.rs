//! The typed HTTP client of the operator commands: one bearer token, one base URL, JSON in and
//! out, and the host's `{code,message}` error bodies turned into [`ClientError::Api`].
//!
//! The token lives only in [`Token`] (no `Debug`/`Display` of its value) and in the
//! `Authorization` header; it never appears in a URL, an error or a log line.

use std::path::Path;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::Value;
use zeroize::Zeroizing;

/// A bearer token read from `HAPPYX_TOKEN` or `--token-file`.
pub struct Token(Zeroizing<String>);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token([redacted])")
    }
}

impl Token {
    /// `--token-file` when given, else `HAPPYX_TOKEN`.
    pub fn load(file: Option<&Path>) -> Result<Token, ClientError> {
        let raw = match file {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| {
                    ClientError::Setup(format!("cannot read the token file {}: {e}", p.display()))
                })?;
                use std::os::unix::fs::PermissionsExt;
                if let Ok(m) = std::fs::metadata(p)
                    && m.permissions().mode() & 0o077 != 0
                {
                    eprintln!(
                        "happyx: warning: the token file {} can be read by other users (chmod 600 it)",
                        p.display()
                    );
                }
                Zeroizing::new(text)
            }
            None => match std::env::var("HAPPYX_TOKEN") {
                Ok(v) => Zeroizing::new(v),
                Err(_) => {
                    return Err(ClientError::Setup(
                        "no token: set HAPPYX_TOKEN or pass --token-file FILE".into(),
                    ));
                }
            },
        };
        let t = raw.lines().next().unwrap_or("").trim();
        if t.is_empty() {
            return Err(ClientError::Setup("the token is empty".into()));
        }
        if !t.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ClientError::Setup(
                "the token holds characters a bearer token cannot have".into(),
            ));
        }
        Ok(Token(Zeroizing::new(t.to_string())))
    }

    fn header(&self) -> Zeroizing<String> {
        Zeroizing::new(format!("Bearer {}", self.0.as_str()))
    }
}

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The host answered with an error body.
    #[error("{}", api_message(*.status, code, message))]
    Api {
        status: StatusCode,
        code: String,
        message: String,
        /// The whole error body (e.g. `approval_id` with `approval_required`).
        body: Value,
    },
    /// The host could not be reached or the connection broke.
    #[error("cannot reach the host at {url}: {cause}")]
    Transport { url: String, cause: String },
    /// The host answered something this client does not understand.
    #[error("unexpected answer from {path}: {cause}")]
    Decode { path: String, cause: String },
    /// Bad local setup (token, URL).
    #[error("{0}")]
    Setup(String),
}

fn api_message(status: StatusCode, code: &str, message: &str) -> String {
    let hint = match status {
        StatusCode::UNAUTHORIZED => {
            " (the host refused the token: check HAPPYX_TOKEN or --token-file, and that it was not revoked)"
        }
        StatusCode::FORBIDDEN if code == "forbidden" => {
            " (this needs another role, e.g. an operator token)"
        }
        _ => "",
    };
    format!("{code}: {message}{hint}")
}

impl ClientError {
    /// The API error code, if the host answered with one.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    pub fn status(&self) -> Option<StatusCode> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// A client of one host.
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Token,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl Client {
    pub fn new(url: &str, token: Token) -> Result<Client, ClientError> {
        let base = url.trim_end_matches('/').to_string();
        let parsed = reqwest::Url::parse(&base)
            .map_err(|e| ClientError::Setup(format!("--url {base:?} is not a URL: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(ClientError::Setup(format!(
                "--url must start with http:// or https:// (got {base:?})"
            )));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60))
            .user_agent(concat!("happyx/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ClientError::Setup(format!("cannot build the HTTP client: {e}")))?;
        Ok(Client { http, base, token })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    fn transport(&self, e: &reqwest::Error) -> ClientError {
        // reqwest's Display names the URL (never the header); keep the cause chain short.
        let mut cause = e.to_string();
        let mut src = std::error::Error::source(e);
        while let Some(s) = src {
            cause = format!("{cause}: {s}");
            src = s.source();
        }
        ClientError::Transport {
            url: self.base.clone(),
            cause,
        }
    }

    /// Sends one request; returns the successful response or the host's error.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<reqwest::Response, ClientError> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header(reqwest::header::AUTHORIZATION, self.token.header().as_str());
        if !query.is_empty() {
            req = req.query(query);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.map_err(|e| self.transport(&e))?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let code = body["code"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| format!("http_{}", status.as_u16()));
        let message = body["message"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| {
                status
                    .canonical_reason()
                    .unwrap_or("the host refused the request")
                    .to_lowercase()
            });
        Err(ClientError::Api {
            status,
            code,
            message,
            body,
        })
    }

    /// `GET path?query` → JSON.
    pub async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<T, ClientError> {
        let resp = self.send(Method::GET, path, query, None).await?;
        decode(path, resp).await
    }

    /// `POST path` with a JSON body → JSON.
    pub async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &Value,
    ) -> Result<T, ClientError> {
        let resp = self.send(Method::POST, path, &[], Some(body)).await?;
        decode(path, resp).await
    }

    /// `GET path` → raw bytes (text/plain routes).
    pub async fn get_bytes(&self, path: &str) -> Result<Vec<u8>, ClientError> {
        let resp = self.send(Method::GET, path, &[], None).await?;
        resp.bytes()
            .await
            .map(|b| b.to_vec())
            .map_err(|e| self.transport(&e))
    }

    /// `GET path` without a token (public routes such as the OpenAPI document).
    pub async fn get_public(&self, path: &str) -> Result<Value, ClientError> {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .map_err(|e| self.transport(&e))?;
        decode(path, resp).await
    }

    /// The WebSocket URL of `path` with `query` (http → ws, https → wss).
    pub fn ws_url(&self, path: &str, query: &str) -> String {
        let base = if let Some(rest) = self.base.strip_prefix("https://") {
            format!("wss://{rest}")
        } else if let Some(rest) = self.base.strip_prefix("http://") {
            format!("ws://{rest}")
        } else {
            self.base.clone()
        };
        format!("{base}{path}?{query}")
    }
}

async fn decode<T: DeserializeOwned>(
    path: &str,
    resp: reqwest::Response,
) -> Result<T, ClientError> {
    let bytes = resp.bytes().await.map_err(|e| ClientError::Decode {
        path: path.to_string(),
        cause: e.to_string(),
    })?;
    serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode {
        path: path.to_string(),
        cause: e.to_string(),
    })
}

/// Checks a command-line id before it goes into a path (ids are `[A-Za-z0-9_-]{1,64}`).
pub fn check_id<'a>(what: &str, id: &'a str) -> Result<&'a str, ClientError> {
    if happyx_core::util::is_valid_id(id) {
        Ok(id)
    } else {
        Err(ClientError::Setup(format!(
            "{id:?} is not a {what} id (letters, digits, - and _)"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_never_shows() {
        let t = Token(Zeroizing::new("hpx_abc_secretvalue".into()));
        assert_eq!(format!("{t:?}"), "Token([redacted])");
        let c = Client::new("http://127.0.0.1:1/", t).unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("secretvalue"), "{shown}");
        assert_eq!(c.base(), "http://127.0.0.1:1");
        assert_eq!(
            c.ws_url("/v1/pty/x/ws", "ticket=t"),
            "ws://127.0.0.1:1/v1/pty/x/ws?ticket=t"
        );
        assert!(Client::new("ftp://x", Token(Zeroizing::new("t".into()))).is_err());
    }
}
