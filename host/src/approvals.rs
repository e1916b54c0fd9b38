//! One-time approvals: the one home of their rules, and the canonical action hash an
//! approval is bound to.
//!
//! The rules, each with a typed outcome: which actions need an approval (the risk floor and
//! the attach rule), who may decide an approval and when ([`may_decide`], [`may_withdraw`]),
//! when a presented one-time token may be spent and whether a refusal says "pending" or
//! "invalid" ([`may_use`]), and the order of the flow ([`step`]: a presented token is always
//! checked, whatever the risk). The store executes a decision inside its transaction with
//! these rules as the judge ([`decide`], [`withdraw`], [`spend`]); the API translates the
//! outcomes (`api/error.rs`). Only the token's hash is ever stored.

use sha2::{Digest, Sha256};

use crate::auth::Role;
use crate::plugins::Risk;
use crate::store::{Approval, ApprovalUse, Granted, Store, StoreError, TokenRecord, UseOutcome};
pub use happyx_core::vocab::{ApprovalStatus, AttachMode};

/// Why an approval cannot be decided or withdrawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecideRefusal {
    #[error("the approval was already decided or used")]
    NotPending,
    #[error("the approval has expired")]
    Expired,
    #[error("the identity that requested an approval cannot decide it")]
    SelfApproval,
    /// Withdrawing another identity's approval; answered like an unknown id (no oracle).
    #[error("no such approval")]
    NotRequester,
}

impl DecideRefusal {
    pub fn code(self) -> &'static str {
        match self {
            Self::NotPending => "approval_not_pending",
            Self::Expired => "approval_expired",
            Self::SelfApproval => "self_approval_forbidden",
            Self::NotRequester => "not_found",
        }
    }
}

/// Why a presented one-time token cannot be spent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UseRefusal {
    /// Bound to this action and requester, but nobody decided it yet.
    #[error("an operator has not decided this approval yet")]
    Pending,
    /// The one answer for unknown, used, denied, expired, other-action and other-identity
    /// tokens, so that it is no oracle.
    #[error("the approval token is not valid for this action")]
    Invalid,
}

impl UseRefusal {
    pub fn code(self) -> &'static str {
        match self {
            Self::Pending => "approval_pending",
            Self::Invalid => "approval_invalid",
        }
    }
}

/// A refused or failed approval operation.
#[derive(Debug, thiserror::Error)]
pub enum ApprovalError {
    #[error(transparent)]
    Decide(#[from] DecideRefusal),
    #[error(transparent)]
    Use(#[from] UseRefusal),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The risk an action runs at: the higher of the recipe plugin's and the operator's floor for
/// the recipe (`[runs] risk_floor`).
pub fn effective_risk(rendered: Risk, floor: Risk) -> Risk {
    rendered.max(floor)
}

/// Whether `role` needs an approval for an action of `kind` at `risk`: opening a run or a PTY
/// at high risk always does; attaching to a high-risk PTY does unless the caller is an
/// operator.
pub fn needs_approval(kind: ActionKind, risk: Risk, role: Role) -> bool {
    match kind {
        ActionKind::Run | ActionKind::Pty => risk == Risk::High,
        ActionKind::Attach => risk == Risk::High && role != Role::Operator,
    }
}

/// The next step of the approval flow for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step<'a> {
    /// Spend the presented token on the action (checked whatever the risk: a token for
    /// another action is refused and nothing is written).
    Spend(&'a str),
    /// No token and the action needs one: persist a pending approval and hand out a token.
    Ask,
    /// No token and none needed.
    Proceed,
}

pub fn step(token: Option<&str>, needs_approval: bool) -> Step<'_> {
    match token {
        Some(t) => Step::Spend(t),
        None if needs_approval => Step::Ask,
        None => Step::Proceed,
    }
}

/// Whether `decider` may decide `a` at `now`: only a pending, unexpired approval, and not by
/// the identity that requested it unless `allow_self` (`approvals.allow_self_approval`).
pub fn may_decide(
    a: &Approval,
    decider: &str,
    now: i64,
    allow_self: bool,
) -> Result<(), DecideRefusal> {
    if a.status != ApprovalStatus::Pending {
        return Err(DecideRefusal::NotPending);
    }
    if a.expires_at <= now {
        return Err(DecideRefusal::Expired);
    }
    if a.requester == decider && !allow_self {
        return Err(DecideRefusal::SelfApproval);
    }
    Ok(())
}

/// Whether `requester` may withdraw `a`: only its own (another's answers as unknown), only
/// while pending.
pub fn may_withdraw(a: &Approval, requester: &str) -> Result<(), DecideRefusal> {
    if a.requester != requester {
        return Err(DecideRefusal::NotRequester);
    }
    if a.status != ApprovalStatus::Pending {
        return Err(DecideRefusal::NotPending);
    }
    Ok(())
}

/// Whether the token behind `r` may be spent on `u` at `now`. The binding (kind, action hash,
/// requester, expiry) is checked before the decision: a token presented for another action or
/// by another identity is invalid even while its approval is pending, so `Pending` tells
/// nobody but the requester that the token exists.
pub fn may_use(r: &TokenRecord, u: &ApprovalUse<'_>, now: i64) -> Result<(), UseRefusal> {
    if r.expires_at <= now
        || r.kind != u.kind
        || r.action_hash != u.action_hash
        || r.requester != u.requester
    {
        return Err(UseRefusal::Invalid);
    }
    if r.status == ApprovalStatus::Pending {
        return Err(UseRefusal::Pending);
    }
    if r.status != ApprovalStatus::Approved || !r.nonce_fresh {
        return Err(UseRefusal::Invalid);
    }
    Ok(())
}

/// Whether `g` is the effect an approval of `kind` grants (a use grants exactly its own).
pub fn grants(kind: ActionKind, g: &Granted) -> bool {
    matches!(
        (kind, g),
        (ActionKind::Run, Granted::Run(_))
            | (ActionKind::Pty, Granted::Pty(_))
            | (ActionKind::Attach, Granted::AttachTicket(_))
    )
}

/// Approves or denies approval `id` as `decider`, under [`may_decide`].
pub async fn decide(
    store: &Store,
    id: &str,
    decider: &str,
    approve: bool,
    allow_self: bool,
) -> Result<Approval, ApprovalError> {
    let judge = |a: &Approval, now| may_decide(a, decider, now, allow_self);
    Ok(store.decide_approval(id, decider, approve, judge).await??)
}

/// Withdraws approval `id` as its requester, under [`may_withdraw`].
pub async fn withdraw(store: &Store, id: &str, requester: &str) -> Result<Approval, ApprovalError> {
    let judge = |a: &Approval, _now| may_withdraw(a, requester);
    Ok(store.withdraw_approval(id, requester, judge).await??)
}

/// Spends a presented one-time token on its effect, in one transaction, under [`may_use`].
/// A lost race (another use spent it first) is `Invalid` like every other failed use.
pub async fn spend(store: &Store, u: &ApprovalUse<'_>) -> Result<Granted, ApprovalError> {
    let kind = u.kind;
    match store.use_approval(u, |r, now| may_use(r, u, now)).await {
        Ok(UseOutcome::Used(g)) if grants(kind, &g) => Ok(g),
        Ok(UseOutcome::Used(_) | UseOutcome::Unknown) => Err(UseRefusal::Invalid.into()),
        Ok(UseOutcome::Refused(r)) => Err(r.into()),
        Err(e) if e.is_unique_violation() => Err(UseRefusal::Invalid.into()),
        Err(e) => Err(e.into()),
    }
}

pub use happyx_core::vocab::ActionKind;

/// The exact action an approval is bound to.
#[derive(Debug, Clone)]
pub struct Action<'a> {
    pub kind: ActionKind,
    pub recipe: &'a str,
    /// Sorted by key (a `BTreeMap` iteration).
    pub args: Vec<(&'a str, &'a str)>,
    pub program: &'a str,
    pub argv: &'a [String],
    pub plugin_hash: &'a str,
    pub session_id: Option<&'a str>,
    /// For attach: the PTY id and the mode.
    pub target: Option<(&'a str, AttachMode)>,
}

/// SHA-256 (hex) over a canonical, length-prefixed, domain-separated encoding:
///
/// ```text
/// "happyx-action-v1" || field*   where field = u32-BE length || bytes
/// fields: kind, recipe, arg-count (u32-BE as 4 bytes), (key, value)*,
///         program, argv-count, argv*, plugin-hash, session ("" if none),
///         target-id ("" if none), target-mode ("" if none)
/// ```
///
/// Length prefixes make the encoding injective: no two actions share it.
pub fn action_hash(a: &Action<'_>) -> String {
    let mut h = Sha256::new();
    h.update(b"happyx-action-v1");
    let mut field = |b: &[u8]| {
        h.update((b.len() as u32).to_be_bytes());
        h.update(b);
    };
    field(a.kind.as_str().as_bytes());
    field(a.recipe.as_bytes());
    field(&(a.args.len() as u32).to_be_bytes());
    for (k, v) in &a.args {
        field(k.as_bytes());
        field(v.as_bytes());
    }
    field(a.program.as_bytes());
    field(&(a.argv.len() as u32).to_be_bytes());
    for arg in a.argv {
        field(arg.as_bytes());
    }
    field(a.plugin_hash.as_bytes());
    field(a.session_id.unwrap_or("").as_bytes());
    let (tid, mode) = a.target.map_or(("", ""), |(id, mode)| (id, mode.as_str()));
    field(tid.as_bytes());
    field(mode.as_bytes());
    hex::encode(h.finalize())
}

#[cfg(test)]
mod rule_tests {
    //! Each rule's typed outcome, on plain values, and the store executing them.

    use super::*;
    use crate::store::{NewApproval, Run, UseEffect};
    use crate::util::{new_id, now_ms};

    fn approval(status: &str, requester: &str, expires_at: i64) -> Approval {
        Approval {
            id: "a".into(),
            kind: ActionKind::Run,
            action_hash: "h".into(),
            action: serde_json::json!({}),
            requester: requester.into(),
            status: status.parse().expect("status"),
            decider: None,
            decided_at: None,
            scope: "approval:a".into(),
            expires_at,
            created_at: 0,
            updated_at: 0,
        }
    }

    #[test]
    fn self_approval_is_refused_unless_allowed() {
        let a = approval("pending", "token:agent", 100);
        assert_eq!(
            may_decide(&a, "token:agent", 50, false),
            Err(DecideRefusal::SelfApproval)
        );
        assert_eq!(may_decide(&a, "token:agent", 50, true), Ok(()));
        assert_eq!(may_decide(&a, "token:op", 50, false), Ok(()));
    }

    #[test]
    fn only_a_pending_unexpired_approval_is_decided() {
        for status in ["approved", "denied", "used"] {
            let a = approval(status, "token:agent", 100);
            assert_eq!(
                may_decide(&a, "token:op", 50, false),
                Err(DecideRefusal::NotPending)
            );
        }
        let a = approval("pending", "token:agent", 100);
        assert_eq!(
            may_decide(&a, "token:op", 100, false),
            Err(DecideRefusal::Expired)
        );
        assert_eq!(may_decide(&a, "token:op", 99, false), Ok(()));
    }

    #[test]
    fn only_the_requester_withdraws_and_only_while_pending() {
        let a = approval("pending", "token:agent", 100);
        assert_eq!(
            may_withdraw(&a, "token:other"),
            Err(DecideRefusal::NotRequester)
        );
        assert_eq!(may_withdraw(&a, "token:agent"), Ok(()));
        let a = approval("approved", "token:agent", 100);
        assert_eq!(
            may_withdraw(&a, "token:agent"),
            Err(DecideRefusal::NotPending)
        );
    }

    #[test]
    fn high_risk_needs_approval_and_attach_unless_operator() {
        for role in [Role::Operator, Role::Agent, Role::Viewer] {
            for kind in [ActionKind::Run, ActionKind::Pty, ActionKind::Attach] {
                for risk in [Risk::Low, Risk::Medium] {
                    assert!(
                        !needs_approval(kind, risk, role),
                        "{kind:?} {risk:?} {role:?}"
                    );
                }
            }
            assert!(needs_approval(ActionKind::Run, Risk::High, role));
            assert!(needs_approval(ActionKind::Pty, Risk::High, role));
        }
        assert!(!needs_approval(
            ActionKind::Attach,
            Risk::High,
            Role::Operator
        ));
        assert!(needs_approval(ActionKind::Attach, Risk::High, Role::Agent));
        assert!(needs_approval(ActionKind::Attach, Risk::High, Role::Viewer));
    }

    #[test]
    fn the_risk_floor_only_raises() {
        assert_eq!(effective_risk(Risk::Low, Risk::High), Risk::High);
        assert_eq!(effective_risk(Risk::High, Risk::Low), Risk::High);
        assert_eq!(effective_risk(Risk::Medium, Risk::Low), Risk::Medium);
    }

    #[test]
    fn a_presented_token_is_always_spent() {
        assert_eq!(step(Some("t"), false), Step::Spend("t"));
        assert_eq!(step(Some("t"), true), Step::Spend("t"));
        assert_eq!(step(None, true), Step::Ask);
        assert_eq!(step(None, false), Step::Proceed);
    }

    fn record(status: &str) -> TokenRecord {
        TokenRecord {
            kind: ActionKind::Run,
            action_hash: "h".into(),
            requester: "token:agent".into(),
            status: status.parse().expect("status"),
            expires_at: 100,
            nonce_fresh: true,
        }
    }

    #[test]
    fn pending_only_for_the_bound_action_and_requester() {
        let run = Run::queued("r".into(), "shell".into(), Risk::High, None, "x".into(), 0);
        let u = ApprovalUse {
            token_hash: "t",
            requester: "token:agent",
            kind: ActionKind::Run,
            action_hash: "h",
            effect: UseEffect::CreateRun {
                run: &run,
                idempotency_key: None,
            },
        };
        assert_eq!(may_use(&record("approved"), &u, 50), Ok(()));
        assert_eq!(
            may_use(&record("pending"), &u, 50),
            Err(UseRefusal::Pending)
        );
        let others = [
            ApprovalUse {
                kind: ActionKind::Pty,
                ..u.clone()
            },
            ApprovalUse {
                action_hash: "other",
                ..u.clone()
            },
            ApprovalUse {
                requester: "token:op",
                ..u.clone()
            },
        ];
        for other in &others {
            for status in ["pending", "approved"] {
                assert_eq!(
                    may_use(&record(status), other, 50),
                    Err(UseRefusal::Invalid),
                    "{status} {other:?}"
                );
            }
        }
        for status in ["denied", "used"] {
            assert_eq!(may_use(&record(status), &u, 50), Err(UseRefusal::Invalid));
        }
        assert_eq!(
            may_use(&record("approved"), &u, 100),
            Err(UseRefusal::Invalid)
        );
        let stale = TokenRecord {
            nonce_fresh: false,
            ..record("approved")
        };
        assert_eq!(may_use(&stale, &u, 50), Err(UseRefusal::Invalid));
    }

    #[test]
    fn a_use_grants_exactly_its_own_effect() {
        let g = Granted::AttachTicket("t".into());
        assert!(grants(ActionKind::Attach, &g));
        assert!(!grants(ActionKind::Run, &g));
        assert!(!grants(ActionKind::Pty, &g));
    }

    #[tokio::test]
    async fn the_store_executes_the_rules_and_a_refusal_writes_nothing() {
        let tmp = tempfile::tempdir().expect("tmp");
        let store = Store::open(tmp.path(), &Default::default())
            .await
            .expect("store");
        let id = new_id();
        let th = "t".repeat(64);
        store
            .create_approval(&NewApproval {
                id: id.clone(),
                kind: ActionKind::Run,
                action_hash: "h".into(),
                action: serde_json::json!({}),
                token_hash: th.clone(),
                requester: "token:agent".into(),
                expires_at: now_ms() + 60_000,
                max_pending: 10,
            })
            .await
            .expect("create");
        let before = store.last_event_seq().await.expect("seq");
        let run = Run::queued(
            new_id(),
            "shell".into(),
            Risk::High,
            None,
            "token:agent".into(),
            0,
        );
        let u = ApprovalUse {
            token_hash: &th,
            requester: "token:agent",
            kind: ActionKind::Run,
            action_hash: "h",
            effect: UseEffect::CreateRun {
                run: &run,
                idempotency_key: None,
            },
        };
        let refused = |r: Result<Granted, ApprovalError>| match r {
            Err(ApprovalError::Use(r)) => Some(r),
            _ => None,
        };
        assert_eq!(refused(spend(&store, &u).await), Some(UseRefusal::Pending));
        let selfish = decide(&store, &id, "token:agent", true, false).await;
        assert!(matches!(
            selfish,
            Err(ApprovalError::Decide(DecideRefusal::SelfApproval))
        ));
        let theirs = withdraw(&store, &id, "token:op").await;
        assert!(matches!(
            theirs,
            Err(ApprovalError::Decide(DecideRefusal::NotRequester))
        ));
        assert_eq!(store.last_event_seq().await.expect("seq"), before);
        decide(&store, &id, "token:op", true, false)
            .await
            .expect("approve");
        assert!(matches!(
            decide(&store, &id, "token:op", false, false).await,
            Err(ApprovalError::Decide(DecideRefusal::NotPending))
        ));
        assert!(matches!(spend(&store, &u).await, Ok(Granted::Run(_))));
        assert_eq!(refused(spend(&store, &u).await), Some(UseRefusal::Invalid));
        assert!(matches!(
            decide(&store, "nope", "token:op", true, false).await,
            Err(ApprovalError::Store(StoreError::NotFound))
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base<'a>(argv: &'a [String]) -> Action<'a> {
        Action {
            kind: ActionKind::Run,
            recipe: "shell",
            args: vec![("command", "ls")],
            program: "sh",
            argv,
            plugin_hash: "abc",
            session_id: None,
            target: None,
        }
    }

    #[test]
    fn every_field_changes_the_hash() {
        let argv = vec!["-c".to_string(), "ls".to_string()];
        let h0 = action_hash(&base(&argv));
        let variants: Vec<Action> = vec![
            Action {
                kind: ActionKind::Pty,
                ..base(&argv)
            },
            Action {
                recipe: "shel",
                ..base(&argv)
            },
            Action {
                args: vec![("command", "ls ")],
                ..base(&argv)
            },
            Action {
                program: "bash",
                ..base(&argv)
            },
            Action {
                plugin_hash: "abd",
                ..base(&argv)
            },
            Action {
                session_id: Some("s"),
                ..base(&argv)
            },
            Action {
                target: Some(("p", AttachMode::Drive)),
                ..base(&argv)
            },
        ];
        for v in variants {
            assert_ne!(action_hash(&v), h0, "{v:?}");
        }
        let other_argv = vec!["-c".to_string(), "l".to_string(), "s".to_string()];
        assert_ne!(action_hash(&base(&other_argv)), h0);
        assert_eq!(action_hash(&base(&argv)), h0);
    }

    #[test]
    fn concatenation_ambiguity_is_impossible() {
        let a1 = vec!["ab".to_string(), "c".to_string()];
        let a2 = vec!["a".to_string(), "bc".to_string()];
        assert_ne!(action_hash(&base(&a1)), action_hash(&base(&a2)));
    }
}
