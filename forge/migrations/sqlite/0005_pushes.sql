-- Every push (and branch deleted on the web), for users' activity feeds.
CREATE TABLE pushes (
	id        INTEGER PRIMARY KEY,
	repo_id   INTEGER NOT NULL REFERENCES repos (id) ON DELETE CASCADE,
	pusher_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
	refs      TEXT NOT NULL, -- JSON: the ref updates
	at        INTEGER NOT NULL
);
CREATE INDEX pushes_by_pusher ON pushes (pusher_id, id);
