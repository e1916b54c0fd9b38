-- HappyX schema, part 5: operator console sessions. A browser signs in with an
-- operator or viewer token and gets a random session id in a cookie; only the
-- SHA-256 of that id is stored, tied to the token, so revoking the token ends
-- every console session it opened (checked on every request).

CREATE TABLE console_sessions (
    -- SHA-256 (hex) of the session id; the id itself is never stored.
    session_hash  TEXT PRIMARY KEY,
    token_id      TEXT NOT NULL REFERENCES tokens (id) ON DELETE CASCADE,
    created_at    BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL
);
CREATE INDEX console_sessions_token ON console_sessions (token_id);
CREATE INDEX console_sessions_expiry ON console_sessions (expires_at);
