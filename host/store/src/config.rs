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
pub struct DatabaseUrl(String);

/// Why a `storage.url` value is refused. The message never repeats the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DatabaseUrlError {
    #[error(
        "storage.url must start with postgres:// or postgresql:// (unset it for SQLite in the data dir)"
    )]
    Scheme,
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
        let rest = s
            .strip_prefix("postgres://")
            .or_else(|| s.strip_prefix("postgresql://"))
            .ok_or(DatabaseUrlError::Scheme)?;
        let authority = rest.split(['/', '?']).next().unwrap_or_default();
        let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        // A unix-socket URL names its directory in `?host=`; one without either has no host.
        if host.is_empty() && !rest.contains("host=") {
            return Err(DatabaseUrlError::NoHost);
        }
        Ok(Self(s.to_owned()))
    }

    /// The URL, password included: only for connecting.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with any password replaced by `***`.
    pub fn redacted(&self) -> String {
        let (scheme, rest) = self.0.split_once("://").unwrap_or(("", &self.0));
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        let authority = match authority.rsplit_once('@') {
            Some((userinfo, host)) => match userinfo.split_once(':') {
                Some((user, _)) => format!("{user}:***@{host}"),
                None => format!("{userinfo}@{host}"),
            },
            None => authority.to_owned(),
        };
        // A password may also be given as a query parameter.
        let tail = match tail.split_once('?') {
            Some((path, query)) => {
                let query: Vec<String> = query
                    .split('&')
                    .map(|kv| match kv.split_once('=') {
                        Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                        _ => kv.to_owned(),
                    })
                    .collect();
                format!("{path}?{}", query.join("&"))
            }
            None => tail.to_owned(),
        };
        format!("{scheme}://{authority}{tail}")
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("DatabaseUrl")
            .field(&self.redacted())
            .finish()
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl Serialize for DatabaseUrl {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.redacted())
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
