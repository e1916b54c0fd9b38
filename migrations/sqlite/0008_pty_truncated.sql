-- A terminal whose transcript reached `[pty] max_transcript_bytes`: the program kept running
-- and live viewers kept seeing its output, but nothing past the cap was stored.
ALTER TABLE pty_sessions ADD COLUMN truncated INTEGER NOT NULL DEFAULT 0;
