-- A disabled user can neither sign in nor use tokens; what they own
-- stays.
ALTER TABLE users ADD COLUMN disabled BOOLEAN NOT NULL DEFAULT FALSE;
