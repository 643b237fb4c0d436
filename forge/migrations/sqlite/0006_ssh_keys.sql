-- Users' SSH public keys, for git over SSH.
CREATE TABLE ssh_keys (
	id          INTEGER PRIMARY KEY,
	user_id     INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
	name        TEXT NOT NULL,
	fingerprint TEXT NOT NULL UNIQUE, -- SHA256:..., as ssh-keygen -l prints it
	public_key  TEXT NOT NULL,        -- the authorized_keys line, without options
	read_only   BOOLEAN NOT NULL DEFAULT FALSE,
	created_at  INTEGER NOT NULL,
	last_used   INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX ssh_keys_by_user ON ssh_keys (user_id);
