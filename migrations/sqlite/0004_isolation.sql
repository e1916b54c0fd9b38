-- HappyX schema, part 4: identities' children kept apart, and spawn failures
-- recorded where operators look.
--
-- `child_identities` maps each identity (the `actor` of a token) to the uid
-- and gid its children run as, allocated once from `runs.uid_range` and never
-- reused, so that files an identity's children left keep their owner.
-- `agent_runs` gains the status `spawn_failed` and an `error` message (the
-- reason the program could not start); `pty_sessions` gains `error` too.
--
-- SQLite cannot change a CHECK constraint in place: the runs table is rebuilt
-- (SQLite's documented procedure, with foreign keys off for the rebuild and
-- checked before commit), so this migration manages its own transaction.
PRAGMA foreign_keys = OFF;
BEGIN IMMEDIATE;

CREATE TABLE child_identities (
    actor       TEXT PRIMARY KEY,
    uid         BIGINT NOT NULL UNIQUE,
    created_at  BIGINT NOT NULL
);

CREATE TABLE agent_runs_new (
    id                TEXT PRIMARY KEY,
    recipe            TEXT NOT NULL,
    risk              TEXT NOT NULL CHECK (risk IN ('low', 'medium', 'high')),
    status            TEXT NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'timed_out', 'lost', 'spawn_failed')),
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
    -- Why the program could not start (`spawn_failed`); NULL otherwise.
    error             TEXT,
    UNIQUE (requested_by, idempotency_key)
);
INSERT INTO agent_runs_new (id, recipe, risk, status, exit_code, session_id, requested_by,
    approval_id, idempotency_key, action_hash, stdout_bytes, stderr_bytes, findings,
    unredacted_chunks, truncated, created_at, started_at, finished_at, updated_at)
SELECT id, recipe, risk, status, exit_code, session_id, requested_by,
    approval_id, idempotency_key, action_hash, stdout_bytes, stderr_bytes, findings,
    unredacted_chunks, truncated, created_at, started_at, finished_at, updated_at
FROM agent_runs;
DROP TABLE agent_runs;
ALTER TABLE agent_runs_new RENAME TO agent_runs;
CREATE INDEX agent_runs_status ON agent_runs (status);

-- Why the terminal's program could not start; NULL otherwise.
ALTER TABLE pty_sessions ADD COLUMN error TEXT;

COMMIT;
PRAGMA foreign_keys = ON;
