-- The wire format version (`v`) of each stored envelope, as it arrived, so that an envelope is
-- served back in the version it was signed in even after the host learns a newer one. Every
-- envelope stored before this column existed was version 1, the only version there was.
ALTER TABLE envelopes ADD COLUMN v BIGINT NOT NULL DEFAULT 1;
