-- HappyX schema version 10 for PostgreSQL: the schema `migrations/sqlite` defines after
-- 0001..0010, in one file (PostgreSQL support starts at version 10; each later version adds one
-- file per engine). The tests of `host/store` apply both and prove they define the same tables,
-- columns (in order), types, NOT NULL, defaults, keys, foreign keys, CHECK constraints and
-- indexes.
--
-- Types: every integer is BIGINT (SQLite's INTEGER flags and singleton ids included), TEXT stays
-- TEXT, BLOB is BYTEA. Ids are TEXT (UUIDv7), times BIGINT Unix milliseconds, JSON TEXT.
-- Tables are created in dependency order, which differs from the SQLite files only in that
-- `approval_uses` (SQLite: 0001, plus `pty_id` in 0003) follows `pty_sessions`.

-- Append-only audit log. `seq` is gap-free: every append takes MAX(seq)+1 inside the same write
-- transaction as the change it records. `hash` chains each event to the one before it.
CREATE TABLE events (
    id          TEXT PRIMARY KEY,
    seq         BIGINT NOT NULL UNIQUE,
    at          BIGINT NOT NULL,
    code        TEXT NOT NULL,
    actor       TEXT NOT NULL,
    subject     TEXT NOT NULL,
    data        TEXT NOT NULL DEFAULT '{}',
    hash        TEXT
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

-- `rotation_required_since`: when a revoked member made a key rotation owed; NULL: none owed.
CREATE TABLE sessions (
    id                       TEXT PRIMARY KEY,
    name                     TEXT NOT NULL,
    kind                     TEXT NOT NULL CHECK (kind IN ('agent', 'terminal', 'encrypted')),
    status                   TEXT NOT NULL CHECK (status IN ('open', 'closed')),
    task_id                  TEXT REFERENCES tasks (id),
    epoch                    BIGINT NOT NULL DEFAULT 0,
    created_by               TEXT NOT NULL,
    created_at               BIGINT NOT NULL,
    updated_at               BIGINT NOT NULL,
    rotation_required_since  BIGINT
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

-- `error`: why the program could not start (`spawn_failed`); NULL otherwise.
-- `recipe_plugin_sha256`: the recipe plugin that rendered the run.
CREATE TABLE agent_runs (
    id                    TEXT PRIMARY KEY,
    recipe                TEXT NOT NULL,
    risk                  TEXT NOT NULL CHECK (risk IN ('low', 'medium', 'high')),
    status                TEXT NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'timed_out', 'lost', 'spawn_failed')),
    exit_code             BIGINT,
    session_id            TEXT REFERENCES sessions (id),
    requested_by          TEXT NOT NULL,
    approval_id           TEXT REFERENCES approvals (id),
    idempotency_key       TEXT,
    action_hash           TEXT NOT NULL,
    stdout_bytes          BIGINT NOT NULL DEFAULT 0,
    stderr_bytes          BIGINT NOT NULL DEFAULT 0,
    findings              BIGINT NOT NULL DEFAULT 0,
    unredacted_chunks     BIGINT NOT NULL DEFAULT 0,
    truncated             BIGINT NOT NULL DEFAULT 0,
    created_at            BIGINT NOT NULL,
    started_at            BIGINT,
    finished_at           BIGINT,
    updated_at            BIGINT NOT NULL,
    error                 TEXT,
    recipe_plugin_sha256  TEXT,
    UNIQUE (requested_by, idempotency_key)
);
CREATE INDEX agent_runs_status ON agent_runs (status);

-- Raw run output: private, never in a public view, bound by retention.
-- `redacted` is the masked copy; NULL when the redactor failed (fail closed).
CREATE TABLE agent_run_outputs (
    id           TEXT PRIMARY KEY,
    run_id       TEXT NOT NULL REFERENCES agent_runs (id),
    stream       TEXT NOT NULL CHECK (stream IN ('stdout', 'stderr')),
    chunk_index  BIGINT NOT NULL,
    byte_offset  BIGINT NOT NULL,
    length       BIGINT NOT NULL,
    data         BYTEA NOT NULL,
    redacted     BYTEA,
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

-- Devices, their versioned keys, enrollment codes, and end-to-end encrypted session envelopes.
-- The host stores public keys, wrapped content keys and ciphertext only.
CREATE TABLE devices (
    id             TEXT PRIMARY KEY,
    name           TEXT,
    status         TEXT NOT NULL CHECK (status IN ('active', 'revoked')),
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL,
    revoked_at     BIGINT,
    revoked_by     TEXT,
    revoke_reason  TEXT
);

-- One row per key version; keys are never replaced, only revoked.
CREATE TABLE device_keys (
    device_id       TEXT NOT NULL REFERENCES devices (id),
    key_version     BIGINT NOT NULL,
    signing_public  TEXT NOT NULL,
    hpke_public     TEXT NOT NULL,
    fingerprint     TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    revoked_at      BIGINT,
    PRIMARY KEY (device_id, key_version)
);

-- Single-use, expiring enrollment codes; only a hash of the code is kept.
CREATE TABLE enrollments (
    id          TEXT PRIMARY KEY,
    code_hash   TEXT NOT NULL UNIQUE,
    kind        TEXT NOT NULL CHECK (kind IN ('enroll', 'reenroll')),
    device_id   TEXT REFERENCES devices (id),
    name        TEXT,
    issued_by   TEXT NOT NULL,
    expires_at  BIGINT NOT NULL,
    used_at     BIGINT,
    created_at  BIGINT NOT NULL
);

-- Which device (at which key version) is authorized in which epoch of an encrypted session.
CREATE TABLE session_devices (
    session_id   TEXT NOT NULL REFERENCES sessions (id),
    epoch        BIGINT NOT NULL,
    device_id    TEXT NOT NULL REFERENCES devices (id),
    key_version  BIGINT NOT NULL,
    added_by     TEXT NOT NULL,
    added_at     BIGINT NOT NULL,
    PRIMARY KEY (session_id, epoch, device_id)
);
CREATE INDEX session_devices_device ON session_devices (device_id);

-- Content keys wrapped (HPKE) to each authorized device, per epoch. Opaque to the host.
CREATE TABLE session_keys (
    session_id          TEXT NOT NULL REFERENCES sessions (id),
    epoch               BIGINT NOT NULL,
    device_id           TEXT NOT NULL REFERENCES devices (id),
    key_version         BIGINT NOT NULL,
    sender_device_id    TEXT NOT NULL REFERENCES devices (id),
    sender_key_version  BIGINT NOT NULL,
    enc                 TEXT NOT NULL,
    ciphertext          TEXT NOT NULL,
    created_at          BIGINT NOT NULL,
    PRIMARY KEY (session_id, epoch, device_id)
);

-- Accepted envelopes. `ordinal` is the host-wide order of acceptance (paging key); `v` the wire
-- format version the envelope arrived (and was signed) in.
CREATE TABLE envelopes (
    id                TEXT PRIMARY KEY,
    ordinal           BIGINT NOT NULL UNIQUE,
    session_id        TEXT NOT NULL REFERENCES sessions (id),
    sender_device_id  TEXT NOT NULL REFERENCES devices (id),
    key_version       BIGINT NOT NULL,
    epoch             BIGINT NOT NULL,
    sequence          BIGINT NOT NULL,
    created_at        BIGINT NOT NULL,
    received_at       BIGINT NOT NULL,
    nonce             BYTEA NOT NULL,
    ciphertext        BYTEA NOT NULL,
    signature         BYTEA NOT NULL,
    size              BIGINT NOT NULL,
    v                 BIGINT NOT NULL DEFAULT 1,
    UNIQUE (session_id, sender_device_id, sequence)
);
CREATE INDEX envelopes_session ON envelopes (session_id, ordinal);

-- Last accepted sequence per (session, sender); moved in the insert's transaction.
CREATE TABLE envelope_cursors (
    session_id        TEXT NOT NULL REFERENCES sessions (id),
    sender_device_id  TEXT NOT NULL REFERENCES devices (id),
    last_sequence     BIGINT NOT NULL,
    updated_at        BIGINT NOT NULL,
    PRIMARY KEY (session_id, sender_device_id)
);

-- Real terminals: one row per PTY session, its lifecycle events, its transcript chunks (raw:
-- private; redacted: the only copy any other view reads) and the single-use attach tickets.
-- `action_hash` and `secret_hash` are SHA-256 digests; neither the command nor the holder's
-- secret is stored. `persisted_offset`: raw output bytes persisted in transcript_chunks
-- (stream 'output'). `error`: why the program could not start. `truncated`: the transcript
-- reached `[pty] max_transcript_bytes` and nothing past it was stored.
CREATE TABLE pty_sessions (
    id                    TEXT PRIMARY KEY,
    recipe                TEXT NOT NULL,
    risk                  TEXT NOT NULL CHECK (risk IN ('low', 'medium', 'high')),
    action_hash           TEXT NOT NULL,
    state                 TEXT NOT NULL CHECK (state IN ('starting', 'running', 'exited', 'lost', 'killed')),
    pid                   BIGINT,
    socket_path           TEXT NOT NULL,
    secret_hash           TEXT NOT NULL,
    boot_id               TEXT NOT NULL,
    exit_code             BIGINT,
    exit_signal           BIGINT,
    rows                  BIGINT NOT NULL,
    cols                  BIGINT NOT NULL,
    persisted_offset      BIGINT NOT NULL DEFAULT 0,
    findings              BIGINT NOT NULL DEFAULT 0,
    withheld_chunks       BIGINT NOT NULL DEFAULT 0,
    requested_by          TEXT NOT NULL,
    approval_id           TEXT REFERENCES approvals (id),
    created_at            BIGINT NOT NULL,
    updated_at            BIGINT NOT NULL,
    exited_at             BIGINT,
    error                 TEXT,
    truncated             BIGINT NOT NULL DEFAULT 0,
    recipe_plugin_sha256  TEXT
);
CREATE INDEX pty_sessions_state ON pty_sessions (state);

CREATE TABLE pty_events (
    id       TEXT PRIMARY KEY,
    pty_id   TEXT NOT NULL REFERENCES pty_sessions (id),
    kind     TEXT NOT NULL CHECK (kind IN ('spawn', 'resize', 'interrupt', 'kill', 'exit', 'attach',
                                           'detach', 'reconnect', 'adopt', 'lost')),
    actor    TEXT NOT NULL,
    data     TEXT NOT NULL DEFAULT '{}',
    at       BIGINT NOT NULL
);
CREATE INDEX pty_events_pty ON pty_events (pty_id, at);

-- Transcript chunks of at most 64 KiB. `data` is raw and private; `redacted` is the masked copy,
-- NULL when the redactor failed (fail closed: withheld).
CREATE TABLE transcript_chunks (
    id           TEXT PRIMARY KEY,
    pty_id       TEXT NOT NULL REFERENCES pty_sessions (id),
    stream       TEXT NOT NULL CHECK (stream IN ('output', 'input', 'system')),
    byte_offset  BIGINT NOT NULL,
    length       BIGINT NOT NULL CHECK (length > 0 AND length <= 65536),
    data         BYTEA NOT NULL,
    redacted     BYTEA,
    redaction    TEXT NOT NULL CHECK (redaction IN ('ok', 'withheld')),
    findings     BIGINT NOT NULL DEFAULT 0,
    policy_hash  TEXT,
    created_at   BIGINT NOT NULL,
    UNIQUE (pty_id, stream, byte_offset)
);

-- Short-lived, single-use WebSocket attach tickets; only the hash is stored.
CREATE TABLE pty_attach_tickets (
    id            TEXT PRIMARY KEY,
    pty_id        TEXT NOT NULL REFERENCES pty_sessions (id),
    mode          TEXT NOT NULL CHECK (mode IN ('observe', 'drive')),
    ticket_hash   TEXT NOT NULL UNIQUE,
    requested_by  TEXT NOT NULL,
    approval_id   TEXT REFERENCES approvals (id),
    expires_at    BIGINT NOT NULL,
    used_at       BIGINT,
    created_at    BIGINT NOT NULL
);

-- Each use of an approval: by a run or by a terminal.
CREATE TABLE approval_uses (
    id           TEXT PRIMARY KEY,
    use_hash     TEXT NOT NULL UNIQUE,
    approval_id  TEXT NOT NULL REFERENCES approvals (id),
    run_id       TEXT REFERENCES agent_runs (id),
    used_at      BIGINT NOT NULL,
    pty_id       TEXT REFERENCES pty_sessions (id)
);

-- The uid and gid each identity's children run as, allocated once and never reused.
CREATE TABLE child_identities (
    actor       TEXT PRIMARY KEY,
    uid         BIGINT NOT NULL UNIQUE,
    created_at  BIGINT NOT NULL
);

-- Operator console sessions: only the SHA-256 (hex) of the cookie's session id is stored, tied
-- to the token, so revoking (deleting) the token ends every console session it opened.
CREATE TABLE console_sessions (
    session_hash  TEXT PRIMARY KEY,
    token_id      TEXT NOT NULL REFERENCES tokens (id) ON DELETE CASCADE,
    created_at    BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL
);
CREATE INDEX console_sessions_token ON console_sessions (token_id);
CREATE INDEX console_sessions_expiry ON console_sessions (expires_at);

-- The tamper-evident event chain's anchor: the seq and hash of the last pruned event (no row:
-- nothing was pruned). A singleton: `id` is always 1.
CREATE TABLE event_anchor (
    id    BIGINT PRIMARY KEY CHECK (id = 1),
    seq   BIGINT NOT NULL CHECK (seq >= 0),
    hash  TEXT NOT NULL
);

-- While this singleton holds its row, events without a hash are owed one: the host's first open
-- hashes them and empties the table, and an import of an export without hashes keeps the row.
-- It starts with its row, as a SQLite database does after 0007.
CREATE TABLE event_hash_backfill (
    id  BIGINT PRIMARY KEY CHECK (id = 1)
);
INSERT INTO event_hash_backfill (id) VALUES (1);

-- Signed checkpoints of the event chain: the host's Ed25519 signature over (seq, chain hash of
-- that event, time); only the newest `audit.checkpoint_keep` are kept.
CREATE TABLE checkpoints (
    seq         BIGINT PRIMARY KEY CHECK (seq >= 0),
    head_hash   TEXT NOT NULL,
    at          BIGINT NOT NULL,
    public_key  TEXT NOT NULL,
    signature   TEXT NOT NULL
);
