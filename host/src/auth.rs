//! Bearer tokens and roles.
//!
//! Every secret HappyX hands out has one recognisable shape, so the redactor
//! and `verify-public` can spot it anywhere:
//!
//! ```text
//! hpx_<id: 12 chars [a-z0-9]>_<secret: 43 chars base64url, 256 bits>
//! ```
//!
//! The id is for lookup and may be logged; the secret is never stored — only
//! its SHA-256, compared in constant time.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use subtle::ConstantTimeEq;

use crate::store::{Store, StoreError, TokenRow};
use crate::util::{now_ms, random_bytes, sha256_hex};

pub const TOKEN_PREFIX: &str = "hpx_";
const ID_LEN: usize = 12;
const SECRET_LEN: usize = 43;
const ID_ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// The role of a token (defined once, in the shared vocabulary).
pub use happyx_core::vocab::Role;

/// A secret in the `hpx_` shape. `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The secret itself, for the one place that hands it to its owner.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// SHA-256 (hex) of the whole secret string; what the store keeps.
    pub fn hash(&self) -> String {
        sha256_hex(self.0.as_bytes())
    }

    /// Wraps a presented secret (from a request) without validating it.
    pub fn presented(s: &str) -> Secret {
        Secret(s.to_string())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Makes a fresh secret: returns the lookup id and the whole secret string.
pub fn mint() -> (String, Secret) {
    let raw = random_bytes::<ID_LEN>();
    let id: String = raw
        .iter()
        .map(|b| ID_ALPHABET[(*b as usize) % ID_ALPHABET.len()] as char)
        .collect();
    let secret = URL_SAFE_NO_PAD.encode(random_bytes::<32>());
    let token = format!("{TOKEN_PREFIX}{id}_{secret}");
    (id, Secret(token))
}

/// Whether `id` has the shape of a token id (12 characters of `[a-z0-9]`).
pub fn is_token_id(id: &str) -> bool {
    id.len() == ID_LEN && id.bytes().all(|b| ID_ALPHABET.contains(&b))
}

/// Splits a presented token into (id, secret part) if it has the right shape.
pub fn split(token: &str) -> Option<(&str, &str)> {
    let rest = token.strip_prefix(TOKEN_PREFIX)?;
    let (id, secret) = rest.split_at_checked(ID_LEN)?;
    let secret = secret.strip_prefix('_')?;
    let ok_id = id.bytes().all(|b| ID_ALPHABET.contains(&b));
    let ok_secret = secret.len() == SECRET_LEN
        && secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    (ok_id && ok_secret).then_some((id, secret))
}

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The token id (`tok_…` in events).
    pub id: String,
    pub role: Role,
    pub name: Option<String>,
}

impl Identity {
    /// Actor string written into events.
    pub fn actor(&self) -> String {
        format!("token:{}", self.id)
    }

    /// The one rule of ownership: an agent sees only what its own identity created or
    /// requested (`owner` is that record's actor); operators and viewers see everything.
    pub fn owns(&self, owner: &str) -> bool {
        self.role != Role::Agent || owner == self.actor()
    }

    /// The owner a listing is narrowed to by [`Identity::owns`]: an agent's own actor, or
    /// `None` for everything.
    pub fn listing_owner(&self) -> Option<String> {
        (self.role == Role::Agent).then(|| self.actor())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("missing or invalid bearer token")]
    Unauthenticated,
    #[error("this token's role may not do that")]
    Forbidden,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl AuthError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::Unauthenticated => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::Store(e) => e.code(),
        }
    }
}

/// Creates a token with `role`; returns the secret (shown once) and the stored row.
pub async fn create_token(
    store: &Store,
    role: Role,
    name: Option<String>,
    actor: &str,
) -> Result<(Secret, TokenRow), StoreError> {
    let (id, secret) = mint();
    let row = TokenRow {
        id,
        name,
        role,
        secret_hash: secret.hash(),
        created_at: now_ms(),
        revoked_at: None,
    };
    store.create_token(&row, actor).await?;
    Ok((secret, row))
}

/// Checks a presented bearer token against the store, in constant time.
pub async fn authenticate(store: &Store, presented: &str) -> Result<Identity, AuthError> {
    let Some((id, _)) = split(presented) else {
        return Err(AuthError::Unauthenticated);
    };
    let hash = sha256_hex(presented.as_bytes());
    let row = store.token_for_auth(id).await?;
    // Compare against a dummy when the id is unknown so timing does not tell.
    let stored = row
        .as_ref()
        .map(|r| r.secret_hash.as_str())
        .unwrap_or("0000000000000000000000000000000000000000000000000000000000000000");
    let equal: bool = hash.as_bytes().ct_eq(stored.as_bytes()).into();
    match row {
        Some(r) if equal && r.revoked_at.is_none() => Ok(Identity {
            id: r.id,
            role: r.role,
            name: r.name,
        }),
        _ => Err(AuthError::Unauthenticated),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agents_own_only_their_own_records() {
        let who = |role| Identity {
            id: "me".into(),
            role,
            name: None,
        };
        let agent = who(Role::Agent);
        assert!(agent.owns("token:me"));
        assert!(!agent.owns("token:other"));
        assert_eq!(agent.listing_owner().as_deref(), Some("token:me"));
        for role in [Role::Operator, Role::Viewer] {
            assert!(who(role).owns("token:other"));
            assert_eq!(who(role).listing_owner(), None);
        }
    }

    #[test]
    fn minted_tokens_have_the_documented_shape() {
        for _ in 0..100 {
            let (id, secret) = mint();
            let (sid, s) = split(secret.expose()).expect("minted token must split");
            assert_eq!(sid, id);
            assert_eq!(s.len(), SECRET_LEN);
        }
    }

    #[test]
    fn malformed_tokens_do_not_split() {
        let (_, good) = mint();
        let g = good.expose();
        assert!(split(&g[1..]).is_none());
        assert!(split(&g[..g.len() - 1]).is_none());
        assert!(split(&format!("{g}x")).is_none());
        assert!(split(&g.replace('_', "-")).is_none());
        assert!(split("").is_none());
        assert!(split("hpx_").is_none());
    }

    #[test]
    fn secrets_never_print() {
        let (_, s) = mint();
        assert_eq!(format!("{s:?}"), "[redacted]");
        assert_eq!(format!("{s}"), "[redacted]");
        assert!(!format!("{:?}", Some(&s)).contains(&s.expose()[4..]));
    }
}
