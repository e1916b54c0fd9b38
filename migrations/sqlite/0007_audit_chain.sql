-- HappyX schema, part 7: the tamper-evident event chain. Each event stores `hash`, the
-- lowercase hex SHA-256 chaining it to the event before it (the definition is in
-- host/src/audit.rs). Pruning the oldest events keeps, in `event_anchor`, the seq and hash of
-- the last pruned one, so the rest still verifies; no row there means nothing was pruned (the
-- chain starts at seq 1 from the genesis value). SQL cannot hash, so existing events are hashed
-- by the host at its first open after this migration, in one transaction that also empties
-- `event_hash_backfill`: while that table holds a row, the hashes are still owed.

ALTER TABLE events ADD COLUMN hash TEXT;

CREATE TABLE event_anchor (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    seq   BIGINT NOT NULL CHECK (seq >= 0),
    hash  TEXT NOT NULL
);

CREATE TABLE event_hash_backfill (
    id  INTEGER PRIMARY KEY CHECK (id = 1)
);
INSERT INTO event_hash_backfill (id) VALUES (1);
