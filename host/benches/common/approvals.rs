//! Approval tokens for the token-use benches (`store` on SQLite, `postgres`): the approved
//! tokens they race for and the store's own spend, written once so both engines measure the
//! same thing. Each bench keeps its raw-SQL baseline, whose placeholders and pool are its
//! engine's.

use happyx::store::{ApprovalUse, NewApproval, Run, Store, UseEffect};
use happyx::util::{new_id, now_ms, random_bytes};
use serde_json::json;

/// Concurrent presentations of each token.
pub const CONTENDERS: usize = 64;

/// id, action_hash, status, expires_at, scope, nonce, current nonce: what a raw baseline reads.
pub type ApprovalRow = (String, String, String, i64, String, String, Option<String>);

/// The run a spent token starts.
pub fn run_row() -> Run {
    Run::queued(
        new_id(),
        "shell".into(),
        happyx::vocab::Risk::High,
        None,
        "token:bench".into(),
        now_ms(),
    )
}

/// Creates `n` approved approvals; returns their token hashes.
pub async fn approved(store: &Store, n: usize) -> Vec<String> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let id = new_id();
        let th = hex::encode(random_bytes::<32>());
        store
            .create_approval(&NewApproval {
                id: id.clone(),
                kind: happyx::vocab::ActionKind::Run,
                action_hash: "h".into(),
                action: json!({}),
                token_hash: th.clone(),
                requester: "token:bench".into(),
                expires_at: now_ms() + 3_600_000,
                max_pending: i64::MAX,
            })
            .await
            .expect("create");
        happyx::approvals::decide(store, &id, "token:op", true, false)
            .await
            .expect("approve");
        out.push(th);
    }
    out
}

/// One presentation of `token_hash` through the host's own path; whether it was spent.
pub async fn store_use(store: &Store, token_hash: &str) -> bool {
    let run = run_row();
    let u = ApprovalUse {
        token_hash,
        requester: "token:bench",
        kind: happyx::vocab::ActionKind::Run,
        action_hash: "h",
        effect: UseEffect::CreateRun {
            run: &run,
            idempotency_key: None,
        },
    };
    happyx::approvals::spend(store, &u).await.is_ok()
}
