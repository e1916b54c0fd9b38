-- HappyX schema, part 1: the audit log, identities, work records, approvals and runs.
-- Postgres-compatible names and types: TEXT ids (UUIDv7), BIGINT Unix-millisecond
-- times, INTEGER flags, JSON kept as TEXT. No SQLite-only types.

-- Append-only audit log. `seq` is gap-free: every append takes MAX(seq)+1 inside
-- the same write transaction as the change it records.
CREATE TABLE events (
    id          TEXT PRIMARY KEY,
    seq         BIGINT NOT NULL UNIQUE,
    at          BIGINT NOT NULL,
    code        TEXT NOT NULL,
    actor       TEXT NOT NULL,
    subject     TEXT NOT NULL,
    data        TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX events_at ON events (at);

-- Bearer tokens. Only the SHA-256 of the secret part is stored.
CREATE TABLE tokens (
    id           TEXT PRIMARY KEY,
    name         TEXT,
    role         TEXT NOT NULL CHECK (role IN ('operator', 'agent', 'viewer')),
    secret_hash  TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    revoked_at   BIGINT
);

CREATE TABLE tasks (
    id           TEXT PRIMARY KEY,
    title        TEXT NOT NULL,
    description  TEXT NOT NULL DEFAULT '',
    status       TEXT NOT NULL CHECK (status IN ('open', 'in_progress', 'done', 'cancelled')),
    created_by   TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL
);

CREATE TABLE sessions (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    kind         TEXT NOT NULL CHECK (kind IN ('agent', 'terminal', 'encrypted')),
    status       TEXT NOT NULL CHECK (status IN ('open', 'closed')),
    task_id      TEXT REFERENCES tasks (id),
    epoch        BIGINT NOT NULL DEFAULT 0,
    created_by   TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL
);
CREATE INDEX sessions_task ON sessions (task_id);

-- Standing grants: `subject` may do `action` within `scope` until expiry or revocation.
CREATE TABLE permissions (
    id           TEXT PRIMARY KEY,
    subject      TEXT NOT NULL,
    action       TEXT NOT NULL,
    scope        TEXT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('active', 'revoked')),
    granted_by   TEXT NOT NULL,
    expires_at   BIGINT,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL
);
CREATE INDEX permissions_subject ON permissions (subject);

-- Per-scope approval nonce; rotated in the same transaction as an approval use.
CREATE TABLE nonces (
    scope        TEXT PRIMARY KEY,
    value        TEXT NOT NULL,
    updated_at   BIGINT NOT NULL
);

-- One-off decisions on one exact action.
CREATE TABLE approvals (
    id            TEXT PRIMARY KEY,
    kind          TEXT NOT NULL CHECK (kind IN ('run', 'pty', 'attach')),
    action_hash   TEXT NOT NULL,
    action        TEXT NOT NULL,
    token_hash    TEXT NOT NULL UNIQUE,
    requester     TEXT NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('pending', 'approved', 'denied', 'used')),
    decider       TEXT,
    decided_at    BIGINT,
    scope         TEXT NOT NULL,
    nonce         TEXT NOT NULL,
    expires_at    BIGINT NOT NULL,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);
CREATE INDEX approvals_status ON approvals (status, requester);

CREATE TABLE agent_runs (
    id                TEXT PRIMARY KEY,
    recipe            TEXT NOT NULL,
    risk              TEXT NOT NULL CHECK (risk IN ('low', 'medium', 'high')),
    status            TEXT NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'timed_out', 'lost')),
    exit_code         BIGINT,
    session_id        TEXT REFERENCES sessions (id),
    requested_by      TEXT NOT NULL,
    approval_id       TEXT REFERENCES approvals (id),
    idempotency_key   TEXT,
    action_hash       TEXT NOT NULL,
    stdout_bytes      BIGINT NOT NULL DEFAULT 0,
    stderr_bytes      BIGINT NOT NULL DEFAULT 0,
    findings          BIGINT NOT NULL DEFAULT 0,
    unredacted_chunks BIGINT NOT NULL DEFAULT 0,
    truncated         INTEGER NOT NULL DEFAULT 0,
    created_at        BIGINT NOT NULL,
    started_at        BIGINT,
    finished_at       BIGINT,
    updated_at        BIGINT NOT NULL,
    UNIQUE (requested_by, idempotency_key)
);
CREATE INDEX agent_runs_status ON agent_runs (status);

CREATE TABLE approval_uses (
    id           TEXT PRIMARY KEY,
    use_hash     TEXT NOT NULL UNIQUE,
    approval_id  TEXT NOT NULL REFERENCES approvals (id),
    run_id       TEXT REFERENCES agent_runs (id),
    used_at      BIGINT NOT NULL
);

-- Raw run output: private, never in a public view, bound by retention.
-- `redacted` is the masked copy; NULL when the redactor failed (fail closed).
CREATE TABLE agent_run_outputs (
    id           TEXT PRIMARY KEY,
    run_id       TEXT NOT NULL REFERENCES agent_runs (id),
    stream       TEXT NOT NULL CHECK (stream IN ('stdout', 'stderr')),
    chunk_index  BIGINT NOT NULL,
    byte_offset  BIGINT NOT NULL,
    length       BIGINT NOT NULL,
    data         BLOB NOT NULL,
    redacted     BLOB,
    findings     BIGINT NOT NULL DEFAULT 0,
    policy_hash  TEXT,
    created_at   BIGINT NOT NULL,
    UNIQUE (run_id, chunk_index)
);

CREATE TABLE deployments (
    id              TEXT PRIMARY KEY,
    started_at      BIGINT NOT NULL,
    version         TEXT NOT NULL,
    schema_version  BIGINT NOT NULL,
    config_hash     TEXT NOT NULL,
    plugin_hashes   TEXT NOT NULL DEFAULT '{}',
    boot_id         TEXT NOT NULL
);

-- What the pruner removed, run by run.
CREATE TABLE prunes (
    id           TEXT PRIMARY KEY,
    at           BIGINT NOT NULL,
    policy_hash  TEXT NOT NULL,
    counts       TEXT NOT NULL
);
