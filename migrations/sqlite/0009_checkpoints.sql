-- HappyX schema, part 9: signed checkpoints of the event chain, and the plugin behind each
-- policy decision. A checkpoint is the host's Ed25519 signature over (seq, chain hash of that
-- event, time) — the byte format is in host/src/checkpoint.rs — taken at an interval when the
-- head moved; only the newest `audit.checkpoint_keep` are kept. Runs and terminals record the
-- SHA-256 (hex) of the recipe plugin that rendered them; NULL for rows older than this
-- migration.

CREATE TABLE checkpoints (
    seq         BIGINT PRIMARY KEY CHECK (seq >= 0),
    head_hash   TEXT NOT NULL,
    at          BIGINT NOT NULL,
    public_key  TEXT NOT NULL,
    signature   TEXT NOT NULL
);

ALTER TABLE agent_runs ADD COLUMN recipe_plugin_sha256 TEXT;
ALTER TABLE pty_sessions ADD COLUMN recipe_plugin_sha256 TEXT;
