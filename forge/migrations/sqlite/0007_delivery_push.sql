-- A push's delivery to a webhook is recorded once, however many times
-- the job that records it runs (at least once, on a durable queue).
ALTER TABLE webhook_deliveries ADD COLUMN push_id INTEGER;
CREATE UNIQUE INDEX webhook_deliveries_once ON webhook_deliveries (webhook_id, push_id) WHERE push_id IS NOT NULL;
