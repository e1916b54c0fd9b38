//! The ledger: every write the host acknowledged (a 2xx carrying an id), every write it
//! refused on purpose (with a unique marker that must never show up in the store), and the
//! writes whose outcome is unknown (a retry without an idempotency key after the connection
//! broke), which bound how many extra rows the store may legitimately hold.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::Serialize;

/// What an acknowledged id names. None of these is touched by the soak's retention policy (it
/// prunes run output, transcript chunks and the oldest events; envelopes only after the sample
/// policy's 90 days), so each must be present at the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Task,
    Session,
    Run,
    Approval,
    Pty,
    Device,
    Envelope,
}

impl Kind {
    pub const ALL: [Kind; 7] = [
        Kind::Task,
        Kind::Session,
        Kind::Run,
        Kind::Approval,
        Kind::Pty,
        Kind::Device,
        Kind::Envelope,
    ];

    /// The table holding it.
    pub fn table(self) -> &'static str {
        match self {
            Kind::Task => "tasks",
            Kind::Session => "sessions",
            Kind::Run => "agent_runs",
            Kind::Approval => "approvals",
            Kind::Pty => "pty_sessions",
            Kind::Device => "devices",
            Kind::Envelope => "envelopes",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Task => "task",
            Kind::Session => "session",
            Kind::Run => "run",
            Kind::Approval => "approval",
            Kind::Pty => "pty",
            Kind::Device => "device",
            Kind::Envelope => "envelope",
        }
    }
}

/// A write refused on purpose: its marker must not appear in `table`.`column`.
#[derive(Debug, Clone, Serialize)]
pub struct Refused {
    pub table: &'static str,
    pub column: &'static str,
    pub marker: String,
    pub code: String,
}

/// An envelope the host acknowledged, as its device can check it.
#[derive(Debug, Clone)]
pub struct SentEnvelope {
    pub session: String,
    pub plaintext: String,
}

#[derive(Default)]
struct Inner {
    acked: BTreeMap<Kind, Vec<String>>,
    refused: Vec<Refused>,
    ambiguous: BTreeMap<Kind, u64>,
    envelopes: Vec<SentEnvelope>,
    /// Envelopes whose 201 was lost but whose retry was answered `replayed`: stored, unacked.
    envelopes_stored_on_retry: u64,
}

#[derive(Default)]
pub struct Ledger {
    inner: Mutex<Inner>,
}

impl Ledger {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn acked(&self, kind: Kind, id: &str) {
        self.lock()
            .acked
            .entry(kind)
            .or_default()
            .push(id.to_string());
    }

    pub fn envelope(&self, id: &str, sent: SentEnvelope) {
        let mut g = self.lock();
        g.acked
            .entry(Kind::Envelope)
            .or_default()
            .push(id.to_string());
        g.envelopes.push(sent);
    }

    pub fn envelope_stored_on_retry(&self) {
        self.lock().envelopes_stored_on_retry += 1;
    }

    pub fn refused(&self, r: Refused) {
        self.lock().refused.push(r);
    }

    /// A create whose answer was lost and that was sent again without an idempotency key.
    pub fn ambiguous(&self, kind: Kind) {
        *self.lock().ambiguous.entry(kind).or_default() += 1;
    }

    pub fn snapshot(&self) -> Snapshot {
        let g = self.lock();
        Snapshot {
            acked: g.acked.clone(),
            refused: g.refused.clone(),
            ambiguous: g.ambiguous.clone(),
            envelopes: g.envelopes.clone(),
            envelopes_stored_on_retry: g.envelopes_stored_on_retry,
        }
    }
}

/// A copy of the ledger for the final check.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub acked: BTreeMap<Kind, Vec<String>>,
    pub refused: Vec<Refused>,
    pub ambiguous: BTreeMap<Kind, u64>,
    pub envelopes: Vec<SentEnvelope>,
    pub envelopes_stored_on_retry: u64,
}

impl Snapshot {
    pub fn acknowledged(&self) -> u64 {
        self.acked.values().map(|v| v.len() as u64).sum()
    }
}
