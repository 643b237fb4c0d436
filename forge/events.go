package forge

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/forgekit/forgekit/gitproto"
)

// PushEvent is what happened in one push.
type PushEvent struct {
	Repo    string               `json:"repository"` // owner/name
	RepoID  int64                `json:"-"`
	Pusher  string               `json:"pusher"`
	Updates []gitproto.RefUpdate `json:"updates"`
	At      time.Time            `json:"at"`
	// Dropped is set when the push removed commits from a ref (a force
	// push, a deletion): what was public at them may have to go from
	// caches too.
	Dropped bool `json:"-"`
}

// Webhook is an HTTP endpoint told of a repository's pushes.
type Webhook struct {
	ID     int64
	RepoID int64
	URL    string
	Secret string // signs the payloads; kept as is, since signing needs it
	Active bool
}

// AddWebhook registers url for the repository's push events.
func (m *Meta) AddWebhook(ctx context.Context, repoID int64, url, secret string) (*Webhook, error) {
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

// Defaults for Deliverer.
const (
	DefaultAttempts = 5
	DefaultBackoff  = 2 * time.Second
	DefaultHookWait = 10 * time.Second
)

// SignatureHeader carries "sha256=" and the hex HMAC-SHA256 of the body
// keyed with the webhook's secret.
const SignatureHeader = "X-Forgekit-Signature-256"

// Sign returns the value of SignatureHeader for body.
func Sign(secret string, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// Deliverer sends push events to the repositories' webhooks: JSON
// bodies signed with HMAC-SHA256, retried with exponential backoff, every
// attempt recorded in the delivery log. Deliveries run in the background;
// Close waits for them. A Deliverer is safe for concurrent use; set its
// fields before use.
type Deliverer struct {
	Meta *Meta

	// Client sends the requests. If nil, a client with a
	// DefaultHookWait timeout.
	Client *http.Client
	// Attempts is the most tries per delivery. If zero, DefaultAttempts.
	Attempts int
	// Backoff is the wait before the second try, doubling after. If
	// zero, DefaultBackoff.
	Backoff time.Duration
	// Logger receives failed deliveries. If nil, nothing is logged.
	Logger *slog.Logger

	wg   sync.WaitGroup
	stop chan struct{}
	once sync.Once
}

func (d *Deliverer) init() {
	d.once.Do(func() { d.stop = make(chan struct{}) })
}

// Close stops retrying and waits for the deliveries in flight.
func (d *Deliverer) Close() error {
	d.init()
	select {
	case <-d.stop:
	default:
		close(d.stop)
	}
	d.wg.Wait()
	return nil
}

// Push queues the deliveries of ev to the webhooks of the repository.
func (d *Deliverer) Push(ctx context.Context, repoID int64, ev PushEvent) error {
	d.init()
	hooks, err := d.Meta.Webhooks(ctx, repoID)
	if err != nil {
		return err
	}
	body, err := json.Marshal(ev)
	if err != nil {
		return fmt.Errorf("forge: %w", err)
	}
	for _, h := range hooks {
		id, err := d.Meta.insert(ctx, `INSERT INTO webhook_deliveries (webhook_id, event, payload, created_at) VALUES (?, 'push', ?, ?) RETURNING id`,
			h.ID, string(body), time.Now().Unix())
		if err != nil {
			return fmt.Errorf("forge: %w", err)
		}
		d.wg.Add(1)
		go func() {
			defer d.wg.Done()
			d.deliver(h, id, body)
		}()
	}
	return nil
}

func (d *Deliverer) deliver(h Webhook, deliveryID int64, body []byte) {
	attempts := d.Attempts
	if attempts <= 0 {
		attempts = DefaultAttempts
	}
	wait := d.Backoff
	if wait <= 0 {
		wait = DefaultBackoff
	}
	client := d.Client
	if client == nil {
		client = &http.Client{Timeout: DefaultHookWait}
	}
	ctx := context.Background()
	for i := 1; i <= attempts; i++ {
		status, err := d.send(client, h, deliveryID, body)
		errText := ""
		if err != nil {
			errText = err.Error()
		}
		ok := err == nil && status >= 200 && status < 300
		var at int64
		if ok {
			at = time.Now().Unix()
		}
		d.Meta.exec(ctx, `UPDATE webhook_deliveries SET attempts = ?, status = ?, error = ?, delivered_at = ? WHERE id = ?`,
			i, status, errText, at, deliveryID)
		if ok {
			return
		}
		if d.Logger != nil {
			d.Logger.Warn("forge: webhook delivery failed", "url", h.URL, "attempt", i, "status", status, "err", err)
		}
		if i == attempts {
			return
		}
		select {
		case <-time.After(wait):
			wait *= 2
		case <-d.stop:
			return
		}
	}
}

func (d *Deliverer) send(client *http.Client, h Webhook, deliveryID int64, body []byte) (int, error) {
	req, err := http.NewRequest(http.MethodPost, h.URL, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Forgekit-Event", "push")
	req.Header.Set("X-Forgekit-Delivery", fmt.Sprint(deliveryID))
	req.Header.Set(SignatureHeader, Sign(h.Secret, body))
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	return resp.StatusCode, nil
}
