CREATE TABLE webhook_deliveries (
	id           INTEGER PRIMARY KEY,
	webhook_id   INTEGER NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
	event        TEXT NOT NULL,
	payload      TEXT NOT NULL,
	attempts     INTEGER NOT NULL DEFAULT 0,
	status       INTEGER NOT NULL DEFAULT 0, -- last HTTP status, 0 for none
	error        TEXT NOT NULL DEFAULT '',
	delivered_at INTEGER NOT NULL DEFAULT 0, -- Unix seconds; 0 until delivered
	created_at   INTEGER NOT NULL
);
CREATE INDEX webhook_deliveries_by_hook ON webhook_deliveries (webhook_id, id);
