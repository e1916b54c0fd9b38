-- HappyX schema, part 2: devices, their versioned keys, enrollment codes, and end-to-end
-- encrypted session envelopes. The host stores public keys, wrapped content keys and
-- ciphertext only; it never holds anything that decrypts a session.
-- Postgres-compatible names and types, as in part 1.

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

-- Accepted envelopes. `ordinal` is the host-wide order of acceptance (paging key).
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
    nonce             BLOB NOT NULL,
    ciphertext        BLOB NOT NULL,
    signature         BLOB NOT NULL,
    size              BIGINT NOT NULL,
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
