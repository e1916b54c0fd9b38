-- The hosts that serve this database (one on SQLite; several on one PostgreSQL) and which of
-- them owns each run and terminal: children and PTY holders live on the host that started them.
-- `advertise_url` is where the other hosts reach a host to forward what only it can do (a
-- terminal's resize, interrupt, kill and live attach); `plugins` its loaded plugins (JSON:
-- kind → SHA-256), for `GET /v1/plugins`. A host's row is written when it starts and when it
-- reloads its plugins. Whether it is alive is not stored: see happyx_store::hosts.
CREATE TABLE hosts (
    id             TEXT PRIMARY KEY,
    advertise_url  TEXT NOT NULL,
    version        TEXT NOT NULL,
    started_at     BIGINT NOT NULL,
    plugins        TEXT NOT NULL DEFAULT '{}',
    plugins_at     BIGINT NOT NULL
);

-- NULL: written before hosts were recorded (one host then), owned by whichever host starts.
ALTER TABLE agent_runs ADD COLUMN host_id TEXT;
ALTER TABLE pty_sessions ADD COLUMN host_id TEXT;
CREATE INDEX agent_runs_host_unfinished ON agent_runs (host_id) WHERE status IN ('queued', 'running');
CREATE INDEX pty_sessions_host_unfinished ON pty_sessions (host_id) WHERE state IN ('starting', 'running');
