//! The closed vocabularies every layer names things with — risk, roles, statuses, action
//! kinds — each defined once as an enum whose serialisation names (serde, `as_str`,
//! `FromStr`) are the strings of the HTTP API and the stored TEXT columns.
//!
//! The store converts at its boundary (an unknown stored value is a typed error, never a
//! panic); the API, the policy runtime and the domain modules compare enums, never strings.
//! [`crate::RetentionKind`] is the model these follow.

use std::fmt;
use std::str::FromStr;

/// A name that is not part of a vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("unknown {vocabulary} (expected one of: {})", expected.join(", "))]
pub struct UnknownName {
    /// Which vocabulary, e.g. `risk`.
    pub vocabulary: &'static str,
    /// The accepted names.
    pub expected: &'static [&'static str],
}

macro_rules! vocab {
    (
        $(#[$meta:meta])*
        $name:ident ($what:literal) { $( $(#[$vmeta:meta])* $variant:ident = $s:literal ),+ $(,)? }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
        #[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
        // utoipa does not read a `rename` whose value comes from a macro fragment, and would
        // document the variant names (`Pending`); every name is its variant's snake_case, so
        // this gives the schema the wire names (pinned by the server's OpenAPI tests).
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $( $(#[$vmeta])* #[serde(rename = $s)] $variant, )+
        }

        impl $name {
            /// Every name, in order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The serialisation name.
            pub fn as_str(self) -> &'static str {
                match self {
                    $( $name::$variant => $s, )+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownName;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $( $s => Ok($name::$variant), )+
                    _ => Err(UnknownName {
                        vocabulary: $what,
                        expected: &[$($s),+],
                    }),
                }
            }
        }
    };
}

vocab! {
    /// Risk level of a recipe action. Ordered `Low < Medium < High`.
    Risk ("risk") {
        Low = "low",
        Medium = "medium",
        High = "high",
    }
}

vocab! {
    /// A role decides what a token may do.
    Role ("role") {
        /// Read only.
        Viewer = "viewer",
        /// Create tasks, sessions, runs and PTYs; read its own.
        Agent = "agent",
        /// Everything, including approving and enrolling.
        Operator = "operator",
    }
}

vocab! {
    /// Where an approval stands.
    ApprovalStatus ("approval status") {
        /// Requested, not decided yet (it may have expired meanwhile).
        Pending = "pending",
        Approved = "approved",
        /// Denied by an operator or withdrawn by its requester.
        Denied = "denied",
        /// Approved and its one-time token spent.
        Used = "used",
    }
}

vocab! {
    /// What kind of action an approval authorises. A token for one kind never authorises
    /// another.
    ActionKind ("action kind") {
        Run = "run",
        Pty = "pty",
        Attach = "attach",
    }
}

vocab! {
    /// Where a run stands. `queued` and `running` are live; the rest are final.
    RunStatus ("run status") {
        Queued = "queued",
        Running = "running",
        /// Exited with code 0.
        Succeeded = "succeeded",
        /// Exited non-zero or was killed by a signal.
        Failed = "failed",
        /// Killed at `runs.timeout`.
        TimedOut = "timed_out",
        /// Its host stopped while it ran.
        Lost = "lost",
        /// The program could not be started.
        SpawnFailed = "spawn_failed",
    }
}

impl RunStatus {
    /// Whether nothing changes after this status.
    pub fn is_final(self) -> bool {
        !matches!(self, RunStatus::Queued | RunStatus::Running)
    }
}

vocab! {
    /// Where a terminal (PTY session) stands. `starting` and `running` are live.
    PtyState ("pty state") {
        Starting = "starting",
        Running = "running",
        /// Its program exited.
        Exited = "exited",
        /// Its holder went away without a word.
        Lost = "lost",
        /// Killed through the API.
        Killed = "killed",
    }
}

impl PtyState {
    /// Whether the terminal is still live.
    pub fn is_live(self) -> bool {
        matches!(self, PtyState::Starting | PtyState::Running)
    }
}

vocab! {
    /// Where a task stands.
    TaskStatus ("task status") {
        Open = "open",
        InProgress = "in_progress",
        Done = "done",
        Cancelled = "cancelled",
    }
}

vocab! {
    /// What a session is for.
    SessionKind ("session kind") {
        Agent = "agent",
        Terminal = "terminal",
        /// End-to-end encrypted between devices.
        Encrypted = "encrypted",
    }
}

vocab! {
    /// Whether a session is open.
    SessionStatus ("session status") {
        Open = "open",
        Closed = "closed",
    }
}

vocab! {
    /// Whether a device may still act.
    DeviceStatus ("device status") {
        Active = "active",
        Revoked = "revoked",
    }
}

vocab! {
    /// Whether a permission grant holds.
    PermissionStatus ("permission status") {
        Active = "active",
        Revoked = "revoked",
    }
}

vocab! {
    /// How a terminal viewer is attached: `observe` only reads; `drive` also types, resizes
    /// and interrupts.
    AttachMode ("attach mode") {
        Observe = "observe",
        Drive = "drive",
    }
}

vocab! {
    /// Which output stream of a run a chunk came from.
    OutputStream ("output stream") {
        Stdout = "stdout",
        Stderr = "stderr",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip<T>(all: &[T])
    where
        T: Copy + fmt::Debug + PartialEq + FromStr + fmt::Display + serde::Serialize,
        T: serde::de::DeserializeOwned,
    {
        for v in all {
            let s = v.to_string();
            assert_eq!(s.parse::<T>().ok(), Some(*v));
            assert_eq!(serde_json::to_string(v).expect("json"), format!("\"{s}\""));
            assert_eq!(
                serde_json::from_str::<T>(&format!("\"{s}\"")).expect("json"),
                *v
            );
        }
    }

    /// Each name is its variant's snake_case, which the enums' `rename_all` (all their schema
    /// reads) assumes.
    #[test]
    fn every_name_is_its_variants_snake_case() {
        fn check<T: Copy + fmt::Debug + fmt::Display>(all: &[T]) {
            for v in all {
                let mut snake = String::new();
                for (i, c) in format!("{v:?}").chars().enumerate() {
                    if c.is_uppercase() && i > 0 {
                        snake.push('_');
                    }
                    snake.extend(c.to_lowercase());
                }
                assert_eq!(v.to_string(), snake, "{v:?}");
            }
        }
        check(Risk::ALL);
        check(Role::ALL);
        check(ApprovalStatus::ALL);
        check(ActionKind::ALL);
        check(RunStatus::ALL);
        check(PtyState::ALL);
        check(TaskStatus::ALL);
        check(SessionKind::ALL);
        check(SessionStatus::ALL);
        check(DeviceStatus::ALL);
        check(PermissionStatus::ALL);
        check(AttachMode::ALL);
        check(OutputStream::ALL);
    }

    #[test]
    fn names_round_trip_through_str_and_serde() {
        round_trip(Risk::ALL);
        round_trip(Role::ALL);
        round_trip(ApprovalStatus::ALL);
        round_trip(ActionKind::ALL);
        round_trip(RunStatus::ALL);
        round_trip(PtyState::ALL);
        round_trip(TaskStatus::ALL);
        round_trip(SessionKind::ALL);
        round_trip(SessionStatus::ALL);
        round_trip(DeviceStatus::ALL);
        round_trip(PermissionStatus::ALL);
        round_trip(AttachMode::ALL);
        round_trip(OutputStream::ALL);
        let names: Vec<_> = Risk::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(names, ["low", "medium", "high"]);
    }

    #[test]
    fn an_unknown_name_is_a_typed_error() {
        let e = "HIGH".parse::<Risk>().expect_err("case matters");
        assert_eq!(e.vocabulary, "risk");
        assert!(e.to_string().contains("low, medium, high"), "{e}");
        assert!("".parse::<Role>().is_err());
        assert!("expired".parse::<ApprovalStatus>().is_err());
        for bad in ["", "Running", "done", "timed-out"] {
            assert!(bad.parse::<RunStatus>().is_err(), "{bad}");
        }
        assert!("dead".parse::<PtyState>().is_err());
        assert!("closed".parse::<TaskStatus>().is_err());
        assert!("pty".parse::<SessionKind>().is_err());
        assert!("active".parse::<SessionStatus>().is_err());
        assert!("open".parse::<DeviceStatus>().is_err());
        assert!("expired".parse::<PermissionStatus>().is_err());
        assert!("Drive".parse::<AttachMode>().is_err());
        assert!("out".parse::<OutputStream>().is_err());
        let e = "paused".parse::<PtyState>().expect_err("not a state");
        assert_eq!(e.vocabulary, "pty state");
        assert!(
            e.to_string()
                .contains("starting, running, exited, lost, killed"),
            "{e}"
        );
    }

    #[test]
    fn the_sets_are_exactly_the_stored_names() {
        let names = |all: &[&'static str]| all.join(",");
        let run: Vec<_> = RunStatus::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(
            names(&run),
            "queued,running,succeeded,failed,timed_out,lost,spawn_failed"
        );
        let pty: Vec<_> = PtyState::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(names(&pty), "starting,running,exited,lost,killed");
        let task: Vec<_> = TaskStatus::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(names(&task), "open,in_progress,done,cancelled");
        let live: Vec<_> = RunStatus::ALL.iter().filter(|s| !s.is_final()).collect();
        assert_eq!(live, [&RunStatus::Queued, &RunStatus::Running]);
        let live: Vec<_> = PtyState::ALL.iter().filter(|s| s.is_live()).collect();
        assert_eq!(live, [&PtyState::Starting, &PtyState::Running]);
    }

    #[test]
    fn risk_is_ordered() {
        assert!(Risk::Low < Risk::Medium && Risk::Medium < Risk::High);
    }
}
