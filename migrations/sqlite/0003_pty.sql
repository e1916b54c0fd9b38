-- HappyX schema, part 3: real terminals. One row per PTY session, its
-- lifecycle events, its transcript chunks (raw: private; redacted: the only
-- copy any other view reads) and the single-use attach tickets.
-- Postgres-compatible names and types, as in part 1.

CREATE TABLE pty_sessions (
    id                TEXT PRIMARY KEY,
    recipe            TEXT NOT NULL,
    risk              TEXT NOT NULL CHECK (risk IN ('low', 'medium', 'high')),
    -- SHA-256 of the approved action (recipe, args, rendered command); never the command itself.
    action_hash       TEXT NOT NULL,
    state             TEXT NOT NULL CHECK (state IN ('starting', 'running', 'exited', 'lost', 'killed')),
    pid               BIGINT,
    socket_path       TEXT NOT NULL,
    -- SHA-256 of the holder's secret; the secret itself is never stored.
    secret_hash       TEXT NOT NULL,
    boot_id           TEXT NOT NULL,
    exit_code         BIGINT,
    exit_signal       BIGINT,
    rows              BIGINT NOT NULL,
    cols              BIGINT NOT NULL,
    -- Raw output bytes persisted in transcript_chunks (stream 'output').
    persisted_offset  BIGINT NOT NULL DEFAULT 0,
    findings          BIGINT NOT NULL DEFAULT 0,
    withheld_chunks   BIGINT NOT NULL DEFAULT 0,
    requested_by      TEXT NOT NULL,
    approval_id       TEXT REFERENCES approvals (id),
    created_at        BIGINT NOT NULL,
    updated_at        BIGINT NOT NULL,
    exited_at         BIGINT
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

-- Transcript chunks of at most 64 KiB. `data` is raw and private; `redacted` is
-- the masked copy, NULL when the redactor failed (fail closed: withheld).
CREATE TABLE transcript_chunks (
    id           TEXT PRIMARY KEY,
    pty_id       TEXT NOT NULL REFERENCES pty_sessions (id),
    stream       TEXT NOT NULL CHECK (stream IN ('output', 'input', 'system')),
    byte_offset  BIGINT NOT NULL,
    length       BIGINT NOT NULL CHECK (length > 0 AND length <= 65536),
    data         BLOB NOT NULL,
    redacted     BLOB,
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

ALTER TABLE approval_uses ADD COLUMN pty_id TEXT REFERENCES pty_sessions (id);
