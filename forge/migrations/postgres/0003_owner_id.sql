-- Repositories belong to their owner's user id, not to a name that a new
-- user could take after the first is deleted.
ALTER TABLE repos ADD COLUMN owner_id BIGINT REFERENCES users (id) ON DELETE SET NULL;
UPDATE repos SET owner_id = (SELECT id FROM users WHERE users.name_lower = lower(repos.owner));
