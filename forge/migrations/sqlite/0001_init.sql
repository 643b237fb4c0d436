CREATE TABLE users (
	id            INTEGER PRIMARY KEY,
	name          TEXT NOT NULL,
	name_lower    TEXT NOT NULL UNIQUE,
	email         TEXT NOT NULL DEFAULT '',
	password_hash TEXT NOT NULL,
	admin         INTEGER NOT NULL DEFAULT 0,
	created_at    INTEGER NOT NULL
);
CREATE TABLE tokens (
	id         INTEGER PRIMARY KEY,
	user_id    INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
	name       TEXT NOT NULL,
	hash       TEXT NOT NULL UNIQUE, -- sha256 of the token; the token itself is never stored
	scope      TEXT NOT NULL CHECK (scope IN ('read', 'write')),
	expires_at INTEGER NOT NULL,     -- Unix seconds; 0 for never
	created_at INTEGER NOT NULL
);
CREATE TABLE repos (
	id             INTEGER PRIMARY KEY,
	owner          TEXT NOT NULL,
	name           TEXT NOT NULL,
	full_lower     TEXT NOT NULL UNIQUE, -- lower(owner/name)
	private        INTEGER NOT NULL DEFAULT 1,
	description    TEXT NOT NULL DEFAULT '',
	default_branch TEXT NOT NULL DEFAULT 'main',
	pushed_at      INTEGER NOT NULL DEFAULT 0,
	size           INTEGER NOT NULL DEFAULT 0,
	created_at     INTEGER NOT NULL
);
CREATE TABLE collaborators (
	repo_id INTEGER NOT NULL REFERENCES repos (id) ON DELETE CASCADE,
	user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
	level   TEXT NOT NULL CHECK (level IN ('read', 'write', 'admin')),
	PRIMARY KEY (repo_id, user_id)
);
CREATE TABLE protected_branches (
	repo_id INTEGER NOT NULL REFERENCES repos (id) ON DELETE CASCADE,
	pattern TEXT NOT NULL,
	PRIMARY KEY (repo_id, pattern)
);
CREATE TABLE webhooks (
	id      INTEGER PRIMARY KEY,
	repo_id INTEGER NOT NULL REFERENCES repos (id) ON DELETE CASCADE,
	url     TEXT NOT NULL,
	secret  TEXT NOT NULL,
	active  INTEGER NOT NULL DEFAULT 1
);
