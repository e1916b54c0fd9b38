-- HappyX schema, part 6: revoking a device rotates session keys. When a device (or a key
-- version of it) that is a member of an encrypted session's current epoch is revoked, the
-- session is marked here in the same transaction: envelopes under that epoch are refused
-- (`rotation_required`) once `envelopes.rotation_grace_ms` has passed, until a surviving member
-- rotates to a new epoch, which clears the mark. NULL: no rotation is owed.

ALTER TABLE sessions ADD COLUMN rotation_required_since BIGINT;
