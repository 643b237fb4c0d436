package forge

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"github.com/forgekit/forgekit/gitproto"
)

// PushEvent is what happened in one push.
type PushEvent struct {
	// ID is the push's id in the feeds (0 if none was recorded): the
	// Deliverer records at most one delivery per push and webhook by it,
	// and receivers may use it to tell pushes apart.
	ID      int64                `json:"id,omitempty"`
	Repo    string               `json:"repository"` // owner/name
	RepoID  int64                `json:"-"`
	Dir     string               `json:"-"` // the repository's directory
	Pusher  string               `json:"pusher"`
	Updates []gitproto.RefUpdate `json:"updates"`
	At      time.Time            `json:"at"`
	// Dropped is set when the push removed commits from a ref (a force
	// push, a deletion): what was public at them may have to go from
	// caches too.
	Dropped bool `json:"-"`
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
// attempt recorded in the delivery log. Without Enqueue, deliveries run
// in the background and Close waits for them; with it, a durable queue
// runs them. A Deliverer is safe for concurrent use; set its
// fields before use.
type Deliverer struct {
	Meta *Meta

	// Client sends the requests. If nil, a client with a
	// DefaultHookWait timeout that follows no redirect and refuses to
	// connect to loopback, private, link-local, shared and reserved
	// addresses (checked on the address dialed, after name resolution),
	// unless AllowPrivate: whoever may add a webhook could otherwise
	// make the server reach services inside its network.
	Client *http.Client
	// AllowPrivate lets the default client reach internal addresses,
	// for forges whose webhooks go to services on the same network.
	AllowPrivate bool
	// Attempts is the most tries per delivery. If zero, DefaultAttempts.
	Attempts int
	// Backoff is the wait before the second try, doubling after. If
	// zero, DefaultBackoff.
	Backoff time.Duration
	// Logger receives failed deliveries. If nil, nothing is logged.
	Logger *slog.Logger

	// Enqueue, if set, takes each delivery Push records, by its id, to
	// a durable queue whose worker calls Attempt until it returns nil or
	// the queue gives up (forged: a River job), so that a delivery
	// outlives the process that recorded it. Push then starts no
	// goroutine. If nil, deliveries are retried in this process's
	// background, and one waiting when it stops is not sent.
	Enqueue func(ctx context.Context, deliveryID int64) error

	wg     sync.WaitGroup
	stop   chan struct{}
	once   sync.Once
	client *http.Client // Client, or the default client made once: its connections are reused, not leaked per attempt
}

func (d *Deliverer) init() {
	d.once.Do(func() {
		d.stop = make(chan struct{})
		d.client = d.Client
		if d.client == nil {
			d.client = webhookClient(d.AllowPrivate)
		}
	})
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

// Push records the deliveries of ev to the webhooks of the repository
// and sends them (Enqueue, or this process's background). A push (ev.ID
// not 0) is recorded once per webhook: called again for the same push,
// as a retried job does, Push records nothing new and hands the
// deliveries already recorded to Enqueue again (which Attempt makes
// harmless for those already sent).
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
	var pushID any // NULL: not deduplicated
	if ev.ID != 0 {
		pushID = ev.ID
	}
	for _, h := range hooks {
		id, err := d.Meta.insert(ctx, `INSERT INTO webhook_deliveries (webhook_id, event, payload, created_at, push_id) VALUES (?, 'push', ?, ?, ?)
			ON CONFLICT (webhook_id, push_id) WHERE push_id IS NOT NULL DO NOTHING RETURNING id`,
			h.ID, string(body), time.Now().Unix(), pushID)
		if errors.Is(err, sql.ErrNoRows) {
			if d.Enqueue == nil {
				continue // this process sent it, or is sending it
			}
			err = d.Meta.queryRow(ctx, `SELECT id FROM webhook_deliveries WHERE webhook_id = ? AND push_id = ?`, h.ID, pushID).Scan(&id)
		}
		if err != nil {
			return fmt.Errorf("forge: %w", err)
		}
		if d.Enqueue != nil {
			if err := d.Enqueue(ctx, id); err != nil {
				return fmt.Errorf("forge: queueing delivery %d: %w", id, err)
			}
			continue
		}
		d.wg.Add(1)
		go func() {
			defer d.wg.Done()
			d.deliver(h, id, body)
		}()
	}
	return nil
}

// Attempt makes one attempt of the recorded delivery id and records it.
// It returns nil when the delivery succeeded, or when nothing is left to
// do (it was delivered already, or its webhook is gone): a queue may run
// it more than once. Otherwise it returns why the attempt failed, for
// the queue to retry.
func (d *Deliverer) Attempt(ctx context.Context, deliveryID int64) error {
	var h Webhook
	var payload string
	var attempts int
	var deliveredAt int64
	err := d.Meta.queryRow(ctx, `SELECT w.id, w.repo_id, w.url, w.secret, d.payload, d.attempts, d.delivered_at
		FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id WHERE d.id = ?`, deliveryID).
		Scan(&h.ID, &h.RepoID, &h.URL, &h.Secret, &payload, &attempts, &deliveredAt)
	if errors.Is(err, sql.ErrNoRows) || (err == nil && deliveredAt != 0) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("forge: delivery %d: %w", deliveryID, err)
	}
	d.init()
	return d.attempt(ctx, d.client, h, deliveryID, []byte(payload), attempts+1)
}

// attempt sends delivery id, try n, and records the outcome.
func (d *Deliverer) attempt(ctx context.Context, client *http.Client, h Webhook, deliveryID int64, body []byte, n int) error {
	status, err := d.send(ctx, client, h, deliveryID, body)
	errText := ""
	if err != nil {
		errText = err.Error()
	}
	ok := err == nil && status >= 200 && status < 300
	var at int64
	if ok {
		at = time.Now().Unix()
	}
	d.Meta.exec(context.WithoutCancel(ctx), `UPDATE webhook_deliveries SET attempts = ?, status = ?, error = ?, delivered_at = ? WHERE id = ?`,
		n, status, errText, at, deliveryID)
	if ok {
		return nil
	}
	if d.Logger != nil {
		d.Logger.Warn("forge: webhook delivery failed", "url", h.URL, "attempt", n, "status", status, "err", err)
	}
	if err == nil {
		err = fmt.Errorf("forge: webhook answered %d", status)
	}
	return err
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
	client := d.client
	ctx := context.Background()
	for i := 1; i <= attempts; i++ {
		if d.attempt(ctx, client, h, deliveryID, body, i) == nil {
			return
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

func (d *Deliverer) send(ctx context.Context, client *http.Client, h Webhook, deliveryID int64, body []byte) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.URL, bytes.NewReader(body))
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

// errPrivateTarget is why a webhook to an internal address fails.
var errPrivateTarget = errors.New("forge: webhook target is a loopback, private, shared or reserved address (see Deliverer.AllowPrivate)")

// internalPrefixes are the networks a webhook may not reach unless
// Deliverer.AllowPrivate: besides loopback, private and link-local addresses,
// "this network", carrier-grade NAT, IETF protocol assignments,
// benchmarking, reserved space and NAT64 (which reaches IPv4 inside).
var internalPrefixes = func() []netip.Prefix {
	var out []netip.Prefix
	for _, s := range []string{"0.0.0.0/8", "100.64.0.0/10", "192.0.0.0/24", "198.18.0.0/15", "240.0.0.0/4",
		"64:ff9b::/96", "64:ff9b:1::/48", "::/128", "100::/64"} {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}()

// internalAddr reports whether a is an address a webhook may not reach.
func internalAddr(a netip.Addr) bool {
	a = a.Unmap()
	if a.IsLoopback() || a.IsPrivate() || a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast() || a.IsUnspecified() || a.IsMulticast() || a.IsInterfaceLocalMulticast() {
		return true
	}
	for _, p := range internalPrefixes {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// webhookClient is the default HTTP client of webhook deliveries. Unless
// private targets are allowed, it refuses to connect to internal addresses (see
// internalAddr): the check is made on the address being dialed, after
// name resolution, so that the connection goes to the address checked
// and a name cannot point a webhook inside (DNS rebinding included).
// Redirects are not followed.
func webhookClient(allowPrivate bool) *http.Client {
	d := &net.Dialer{Timeout: 5 * time.Second}
	if !allowPrivate {
		d.Control = func(_, address string, _ syscall.RawConn) error {
			host, _, err := net.SplitHostPort(address)
			if err != nil {
				return err
			}
			a, err := netip.ParseAddr(host)
			if err != nil {
				return err
			}
			if internalAddr(a) {
				return errPrivateTarget
			}
			return nil
		}
	}
	return &http.Client{
		Timeout:       DefaultHookWait,
		Transport:     &http.Transport{DialContext: d.DialContext, Proxy: nil},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}
