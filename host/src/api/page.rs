//! Paging of listings: [`Paged`], the one extractor every listing route takes. A listing's
//! query struct (its parameter names and OpenAPI params stay its own) says through
//! [`PageParams`] which [`Limits`] apply and what its cursor is; [`Paged`] parses the query
//! string (`400 invalid_query`, as [`ApiQuery`]) and checks both in one place: the page size is
//! `1..=MAX` (absent: `DEFAULT`), an id cursor has the shape of an id, a sequence cursor is 0 or
//! more. Every bad value is `400 invalid_query` naming the parameter and the bounds.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::error::ApiError;
use super::extract::ApiQuery;

/// The page size bounds of a listing.
pub trait Limits {
    /// Page size when `limit` is absent.
    const DEFAULT: i64;
    /// Largest `limit` accepted.
    const MAX: i64;
}

/// Listings paged by id (`after` = the `next` of the previous page): 50 by default, at most 500.
pub struct IdPages;
impl Limits for IdPages {
    const DEFAULT: i64 = 50;
    const MAX: i64 = 500;
}

/// The newest items, one page, no cursor (approvals, terminals): 100 by default, at most 500.
pub struct RecentItems;
impl Limits for RecentItems {
    const DEFAULT: i64 = 100;
    const MAX: i64 = 500;
}

/// The audit log by `seq`: 100 by default, at most 1000.
pub struct EventPages;
impl Limits for EventPages {
    const DEFAULT: i64 = 100;
    const MAX: i64 = 1000;
}

/// Stored checkpoints by `seq`: 100 by default, at most 1000.
pub struct CheckpointPages;
impl Limits for CheckpointPages {
    const DEFAULT: i64 = 100;
    const MAX: i64 = 1000;
}

/// Where a page starts, checked.
pub trait Cursor: Sized {
    /// The value as the query string carries it.
    type Raw;
    /// Checks `raw`; `param` names the query parameter in the error.
    fn check(raw: Self::Raw, param: &str) -> Result<Self, ApiError>;
}

/// An id cursor: 1 to 64 of `A-Z a-z 0-9 - _` (ids outside that shape cannot exist).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdCursor(pub String);

impl Cursor for IdCursor {
    type Raw = String;
    fn check(raw: String, param: &str) -> Result<Self, ApiError> {
        if crate::util::is_valid_id(&raw) {
            Ok(Self(raw))
        } else {
            Err(ApiError::bad_request(
                "invalid_query",
                format!("{param} is not a valid id"),
            ))
        }
    }
}

/// A sequence cursor: an event `seq`, 0 or more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeqCursor(pub i64);

impl Cursor for SeqCursor {
    type Raw = i64;
    fn check(raw: i64, param: &str) -> Result<Self, ApiError> {
        if raw >= 0 {
            Ok(Self(raw))
        } else {
            Err(ApiError::bad_request(
                "invalid_query",
                format!("{param} must be >= 0"),
            ))
        }
    }
}

/// No cursor: the listing is one page.
#[derive(Debug)]
pub enum NoCursor {}

impl Cursor for NoCursor {
    type Raw = std::convert::Infallible;
    fn check(raw: Self::Raw, _: &str) -> Result<Self, ApiError> {
        match raw {}
    }
}

/// A listing's query string: its limits, its cursor and where they are.
pub trait PageParams: DeserializeOwned {
    type Limits: Limits;
    type Cursor: Cursor;
    /// The name of the cursor parameter.
    const CURSOR: &'static str = "after";
    /// Takes the raw cursor out of the parsed query.
    fn take_cursor(&mut self) -> Option<<Self::Cursor as Cursor>::Raw>;
    /// The requested page size.
    fn limit(&self) -> Option<i64>;
}

/// A listing's query, its checked cursor and page size.
pub struct Paged<Q: PageParams> {
    /// The rest of the query (filters, order); its cursor is taken out.
    pub query: Q,
    pub after: Option<Q::Cursor>,
    pub limit: i64,
}

impl<Q: PageParams> Paged<Q> {
    /// Checks a parsed query.
    pub fn new(mut query: Q) -> Result<Self, ApiError> {
        let limit = check_limit::<Q::Limits>(query.limit())?;
        let after = query
            .take_cursor()
            .map(|raw| Q::Cursor::check(raw, Q::CURSOR))
            .transpose()?;
        Ok(Self {
            query,
            after,
            limit,
        })
    }
}

impl<Q: PageParams<Cursor = IdCursor>> Paged<Q> {
    /// The id cursor, for the store.
    pub fn after_id(&self) -> Option<&str> {
        self.after.as_ref().map(|c| c.0.as_str())
    }
}

impl<Q: PageParams<Cursor = SeqCursor>> Paged<Q> {
    /// The sequence cursor, 0 when absent.
    pub fn after_seq(&self) -> i64 {
        self.after.map_or(0, |c| c.0)
    }
}

/// The page size: `DEFAULT` when absent, else `1..=MAX`.
pub fn check_limit<L: Limits>(limit: Option<i64>) -> Result<i64, ApiError> {
    match limit {
        None => Ok(L::DEFAULT),
        Some(n) if (1..=L::MAX).contains(&n) => Ok(n),
        Some(_) => Err(ApiError::bad_request(
            "invalid_query",
            format!("limit must be between 1 and {}", L::MAX),
        )),
    }
}

impl<Q: PageParams, S: Send + Sync> FromRequestParts<S> for Paged<Q> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let ApiQuery(q) = ApiQuery::<Q>::from_request_parts(parts, state).await?;
        Self::new(q)
    }
}

/// Paging parameters of a listing by id.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    /// Return items after this id (the `next` of the previous page).
    pub after: Option<String>,
    /// Page size, 1 to 500 (default 50).
    pub limit: Option<i64>,
}

impl PageParams for PageQuery {
    type Limits = IdPages;
    type Cursor = IdCursor;
    fn take_cursor(&mut self) -> Option<String> {
        self.after.take()
    }
    fn limit(&self) -> Option<i64> {
        self.limit
    }
}

#[cfg(test)]
mod tests {
    use axum::http::Request;

    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Recent {
        limit: Option<i64>,
        status: Option<String>,
    }
    impl PageParams for Recent {
        type Limits = RecentItems;
        type Cursor = NoCursor;
        fn take_cursor(&mut self) -> Option<std::convert::Infallible> {
            None
        }
        fn limit(&self) -> Option<i64> {
            self.limit
        }
    }

    /// A listing paged by `seq`: the real `/public/checkpoints` query.
    type Seq = crate::api::public::CheckpointQuery;

    async fn extract<Q: PageParams>(query: &str) -> Result<Paged<Q>, (&'static str, String)> {
        let req = Request::get(format!("/x?{query}"))
            .body(())
            .expect("request");
        let (mut parts, ()) = req.into_parts();
        Paged::<Q>::from_request_parts(&mut parts, &())
            .await
            .map_err(|e| (e.code, e.message))
    }

    fn refused<T>(r: Result<T, (&'static str, String)>) -> String {
        match r {
            Ok(_) => panic!("accepted"),
            Err((code, message)) => {
                assert_eq!(code, "invalid_query");
                message
            }
        }
    }

    #[tokio::test]
    async fn limits_apply_at_their_edges() {
        assert_eq!(extract::<PageQuery>("").await.expect("ok").limit, 50);
        assert_eq!(extract::<PageQuery>("limit=1").await.expect("ok").limit, 1);
        assert_eq!(
            extract::<PageQuery>("limit=500").await.expect("ok").limit,
            500
        );
        for bad in ["limit=0", "limit=501", "limit=-1"] {
            let m = refused(extract::<PageQuery>(bad).await);
            assert_eq!(m, "limit must be between 1 and 500");
        }
        refused(extract::<PageQuery>("limit=ten").await);
        assert_eq!(extract::<Recent>("").await.expect("ok").limit, 100);
        assert_eq!(extract::<Recent>("limit=500").await.expect("ok").limit, 500);
        refused(extract::<Recent>("limit=501").await);
        assert_eq!(extract::<Seq>("").await.expect("ok").limit, 100);
        assert_eq!(extract::<Seq>("limit=1000").await.expect("ok").limit, 1000);
        let m = refused(extract::<Seq>("limit=1001").await);
        assert_eq!(m, "limit must be between 1 and 1000");
    }

    #[tokio::test]
    async fn cursors_are_checked() {
        let id = "a".repeat(64);
        let p = extract::<PageQuery>(&format!("after={id}"))
            .await
            .expect("ok");
        assert_eq!(p.after_id(), Some(id.as_str()));
        assert_eq!(extract::<PageQuery>("").await.expect("ok").after_id(), None);
        for bad in [
            format!("after={}", "a".repeat(65)),
            "after=".into(),
            "after=a%2Fb".into(),
        ] {
            let m = refused(extract::<PageQuery>(&bad).await);
            assert_eq!(m, "after is not a valid id");
        }
        assert_eq!(
            extract::<Seq>("from_seq=0").await.expect("ok").after_seq(),
            0
        );
        assert_eq!(extract::<Seq>("").await.expect("ok").after_seq(), 0);
        let m = refused(extract::<Seq>("from_seq=-1").await);
        assert_eq!(m, "from_seq must be >= 0");
    }

    #[tokio::test]
    async fn other_parameters_stay_the_listings() {
        let p = extract::<Recent>("status=pending&limit=2")
            .await
            .expect("ok");
        assert_eq!((p.query.status.as_deref(), p.limit), (Some("pending"), 2));
        // No cursor on a one-page listing, and no unknown parameter anywhere.
        refused(extract::<Recent>("after=abc").await);
        refused(extract::<PageQuery>("order=desc").await);
    }
}
