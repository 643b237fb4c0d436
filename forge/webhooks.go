package forge

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"time"
)

// AddWebhook makes the repository's pushes known to u, signed with
// secret. u must be an absolute http or https URL (ErrBadWebhook);
// where it may point is checked at each delivery (Deliverer.AllowPrivate).
func (f *Forge) AddWebhook(ctx context.Context, repoID int64, u, secret string) (*Webhook, error) {
	pu, err := url.Parse(strings.TrimSpace(u))
	if err != nil || (pu.Scheme != "http" && pu.Scheme != "https") || pu.Host == "" || pu.User != nil {
		return nil, fmt.Errorf("%w: %q", ErrBadWebhook, u)
	}
	return f.Meta.addWebhook(ctx, repoID, pu.String(), secret)
}

// DeleteWebhook removes the repository's webhook id.
func (f *Forge) DeleteWebhook(ctx context.Context, repoID, id int64) error {
	return f.Meta.deleteWebhook(ctx, repoID, id)
}

// Webhook is an HTTP endpoint told of a repository's pushes.
type Webhook struct {
	ID     int64
	RepoID int64
	URL    string
	Secret string // signs the payloads; kept as is, since signing needs it
	Active bool
}

// addWebhook registers url for the repository's push events.
func (m *Meta) addWebhook(ctx context.Context, repoID int64, url, secret string) (*Webhook, error) {
	id, err := m.insert(ctx, `INSERT INTO webhooks (repo_id, url, secret, active) VALUES (?, ?, ?, TRUE) RETURNING id`, repoID, url, secret)
	if err != nil {
		return nil, fmt.Errorf("forge: %w", err)
	}
	return &Webhook{ID: id, RepoID: repoID, URL: url, Secret: secret, Active: true}, nil
}

// Webhooks returns the repository's active webhooks.
func (m *Meta) Webhooks(ctx context.Context, repoID int64) ([]Webhook, error) {
	rows, err := m.query(ctx, `SELECT id, repo_id, url, secret, active FROM webhooks WHERE repo_id = ? AND active = TRUE ORDER BY id`, repoID)
	if err != nil {
		return nil, fmt.Errorf("forge: %w", err)
	}
	defer rows.Close()
	var out []Webhook
	for rows.Next() {
		var h Webhook
		if err := rows.Scan(&h.ID, &h.RepoID, &h.URL, &h.Secret, &h.Active); err != nil {
			return nil, err
		}
		out = append(out, h)
	}
	return out, rows.Err()
}

// Delivery is one row of a webhook's delivery log.
type Delivery struct {
	ID          int64
	Event       string
	Attempts    int
	Status      int
	Error       string
	DeliveredAt time.Time
}

// Deliveries returns a webhook's delivery log, newest first.
func (m *Meta) Deliveries(ctx context.Context, webhookID int64, limit int) ([]Delivery, error) {
	rows, err := m.query(ctx, `SELECT id, event, attempts, status, error, delivered_at FROM webhook_deliveries
		WHERE webhook_id = ? ORDER BY id DESC LIMIT ?`, webhookID, limit)
	if err != nil {
		return nil, fmt.Errorf("forge: %w", err)
	}
	defer rows.Close()
	var out []Delivery
	for rows.Next() {
		var d Delivery
		var at int64
		if err := rows.Scan(&d.ID, &d.Event, &d.Attempts, &d.Status, &d.Error, &at); err != nil {
			return nil, err
		}
		if at != 0 {
			d.DeliveredAt = time.Unix(at, 0)
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

// deleteWebhook removes one of the repository's webhooks.
func (m *Meta) deleteWebhook(ctx context.Context, repoID, id int64) error {
	_, err := m.exec(ctx, `DELETE FROM webhooks WHERE repo_id = ? AND id = ?`, repoID, id)
	return err
}
