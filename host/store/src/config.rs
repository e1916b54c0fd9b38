//! The storage section of the host configuration (`[storage]` in `happyx.toml`): which engine
//! holds the data and how it is opened. It lives with the store, which is its only reader; the
//! host's configuration embeds it as `storage` and documents every key in
//! `examples/happyx.toml`.
//!
//! `url` unset means SQLite in the data dir (the default); `postgres://…` or
//! `postgresql://…` means PostgreSQL, which several hosts may share. The URL may carry a
//! password, so it never appears whole in `Debug`, `Display`, serialized configuration (the
//! deployment record hashes that) or error messages: only its redacted form does.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// `synchronous` pragma for the SQLite database.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Synchronous {
    /// Every commit is fsynced: an acknowledged write survives power loss.
    Full,
    /// WAL commits are fsynced at checkpoints: an acknowledged write survives a
    /// process crash (kill -9) but the last commits may be lost on power loss.
    Normal,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// The PostgreSQL database to use instead of SQLite in the data dir.
    pub url: Option<DatabaseUrl>,
    /// `full` (default) or `normal`; see `examples/happyx.toml`. SQLite only.
    pub synchronous: Synchronous,
    /// How long a writer waits for another process's write lock. SQLite only.
    pub busy_timeout_ms: u64,
    /// Read connections in the pool (SQLite: writes go through one more connection;
    /// PostgreSQL: the pool has this many connections plus two for writers).
    pub read_connections: u32,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            url: None,
            synchronous: Synchronous::Full,
            busy_timeout_ms: 10_000,
            read_connections: 8,
        }
    }
}

/// A PostgreSQL connection URL (`postgres://` or `postgresql://`). Checked when the
/// configuration is read; shown only with its password replaced by `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl {
    url: String,
    /// The URL with any password replaced, made once when parsed: what is ever shown.
    shown: String,
}

/// Why a `storage.url` value is refused. The message never repeats the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DatabaseUrlError {
    #[error(
        "storage.url must start with postgres:// or postgresql:// (unset it for SQLite in the data dir)"
    )]
    Scheme,
    #[error("storage.url is not a valid URL")]
    Malformed,
    #[error("storage.url names no host")]
    NoHost,
    #[error("storage.url is longer than {MAX_URL_BYTES} bytes")]
    TooLong,
}

/// Longest `storage.url` accepted.
pub const MAX_URL_BYTES: usize = 2048;

impl DatabaseUrl {
    pub fn parse(s: &str) -> Result<Self, DatabaseUrlError> {
        if s.len() > MAX_URL_BYTES {
            return Err(DatabaseUrlError::TooLong);
        }
        if !(s.starts_with("postgres://") || s.starts_with("postgresql://")) {
            return Err(DatabaseUrlError::Scheme);
        }
        let url = url::Url::parse(s).map_err(|_| DatabaseUrlError::Malformed)?;
        // A unix-socket URL names its directory in `?host=`; one without either has no host.
        if url.host_str().is_none_or(str::is_empty) && !url.query_pairs().any(|(k, _)| k == "host")
        {
            return Err(DatabaseUrlError::NoHost);
        }
        Ok(Self {
            url: s.to_owned(),
            shown: redacted(url),
        })
    }

    /// The URL, password included: only for connecting.
    pub fn expose(&self) -> &str {
        &self.url
    }

    /// The URL with any password (in the user info or a `password` query parameter) replaced
    /// by `***`.
    pub fn redacted(&self) -> &str {
        &self.shown
    }
}

fn redacted(mut url: url::Url) -> String {
    if url.password().is_some() {
        // Fails only for a URL without a host, which has no user info to hide.
        let _ = url.set_password(Some("***"));
    }
    let password = |k: &str| k.eq_ignore_ascii_case("password");
    if url.query_pairs().any(|(k, _)| password(&k)) {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| {
                let v = if password(&k) {
                    "***".into()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
    }
    url.into()
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("DatabaseUrl").field(&self.shown).finish()
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

impl Serialize for DatabaseUrl {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.shown)
    }
}

impl<'de> Deserialize<'de> for DatabaseUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        DatabaseUrl::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_postgres_urls_are_accepted_and_their_password_never_shows() {
        for bad in [
            "sqlite://x.db",
            "mysql://h/db",
            "",
            "postgres:/h",
            "http://h",
        ] {
            assert_eq!(
                DatabaseUrl::parse(bad),
                Err(DatabaseUrlError::Scheme),
                "{bad}"
            );
        }
        assert_eq!(
            DatabaseUrl::parse("postgres:///db"),
            Err(DatabaseUrlError::NoHost)
        );
        assert_eq!(
            DatabaseUrl::parse("postgres://h:99999/db"),
            Err(DatabaseUrlError::Malformed)
        );
        let long = format!("postgres://h/{}", "d".repeat(MAX_URL_BYTES));
        assert_eq!(DatabaseUrl::parse(&long), Err(DatabaseUrlError::TooLong));
        let edge = format!("postgres://h/{}", "d".repeat(MAX_URL_BYTES - 13));
        assert!(DatabaseUrl::parse(&edge).is_ok());
        assert!(DatabaseUrl::parse("postgres:///db?host=/run/pg").is_ok());

        let u = DatabaseUrl::parse(
            "postgresql://app:s3cr%40t@db.example:5432/happyx?sslmode=require&password=s3cr",
        )
        .expect("valid");
        for shown in [
            format!("{u:?}"),
            u.to_string(),
            serde_json::to_string(&u).expect("json"),
        ] {
            assert!(!shown.contains("s3cr"), "{shown}");
            assert!(shown.contains("app:***@db.example:5432/happyx"), "{shown}");
            assert!(shown.contains("sslmode=require"), "{shown}");
        }
        assert!(u.expose().contains("s3cr%40t"));
        let no_password = DatabaseUrl::parse("postgres://app@h/db").expect("valid");
        assert_eq!(no_password.to_string(), "postgres://app@h/db");
    }
}
