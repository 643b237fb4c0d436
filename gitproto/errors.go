package gitproto

import (
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

var (
	// ErrNotFound is returned by Resolvers for names that are not served
	// repositories and by Authorizers to hide a repository; 404.
	ErrNotFound = errors.New("gitproto: repository not found")
	// ErrUnauthorized is returned by Authorizers to ask for credentials;
	// 401 with WWW-Authenticate.
	ErrUnauthorized = errors.New("gitproto: authentication required")
	// ErrForbidden is returned by Authorizers to refuse an authenticated
	// principal; 403.
	ErrForbidden = errors.New("gitproto: forbidden")
	// ErrMalformed is wrapped by errors for request bodies that are not
	// valid pkt-line streams or git requests; 400.
	ErrMalformed = errors.New("gitproto: malformed request")
	// ErrBadProtocol is returned for an invalid Git-Protocol header; 400.
	ErrBadProtocol = errors.New("gitproto: invalid Git-Protocol header")
	// ErrTooLarge is returned when a request body exceeds its limit; 413.
	ErrTooLarge = errors.New("gitproto: request body too large")
	// ErrOverloaded is returned by admission control when a repository
	// has too many pack generations running and queued; 503 with
	// Retry-After.
	ErrOverloaded = errors.New("gitproto: too many concurrent requests")
	// ErrUnsupported is returned by an engine for a request it cannot
	// serve, such as a shallow clone through gogit.Engine.
	ErrUnsupported = errors.New("gitproto: not supported by this engine")
	// ErrUnavailable is returned by Resolvers and Authorizers that cannot
	// decide now (their database does not answer); 503 with Retry-After.
	// Their details belong in their own log: the client sees this text.
	ErrUnavailable = errors.New("gitproto: temporarily unavailable")
)

var (
	errContentType     = errors.New("gitproto: wrong content type")
	errContentEncoding = errors.New("gitproto: unsupported content encoding")
	errUnknownService  = errors.New("gitproto: unknown service") // 403, as git http-backend answers
)

type methodError struct{ allow string }

func (e *methodError) Error() string { return "gitproto: method not allowed" }

func errMethod(allow string) error { return &methodError{allow: allow} }

// statusOf maps an error to the HTTP status Handler answers it with.
func statusOf(err error) int {
	var me *methodError
	switch {
	case errors.As(err, &me):
		return http.StatusMethodNotAllowed
	case errors.Is(err, ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, ErrUnauthorized):
		return http.StatusUnauthorized
	case errors.Is(err, ErrForbidden), errors.Is(err, errUnknownService):
		return http.StatusForbidden
	case errors.Is(err, ErrMalformed), errors.Is(err, ErrBadProtocol):
		return http.StatusBadRequest
	case errors.Is(err, ErrTooLarge):
		return http.StatusRequestEntityTooLarge
	case errors.Is(err, errContentType), errors.Is(err, errContentEncoding):
		return http.StatusUnsupportedMediaType
	case errors.Is(err, ErrOverloaded), errors.Is(err, ErrUnavailable):
		return http.StatusServiceUnavailable
	case errors.Is(err, os.ErrDeadlineExceeded):
		return http.StatusRequestTimeout
	case errors.Is(err, ErrUnsupported):
		return http.StatusNotImplemented
	case errors.Is(err, context.Canceled):
		return 499 // client closed the request; nobody reads it
	}
	return http.StatusInternalServerError
}

func (h *Handler) writeError(w http.ResponseWriter, r *http.Request, err error) int {
	status := statusOf(err)
	hdr := w.Header()
	var me *methodError
	var oe *OverloadError
	switch {
	case errors.As(err, &me):
		hdr.Set("Allow", me.allow)
	case status == http.StatusUnauthorized:
		realm := h.Realm
		if realm == "" {
			realm = DefaultRealm
		}
		hdr.Set("WWW-Authenticate", `Basic realm=`+strconv.Quote(realm)+`, charset="UTF-8"`)
	case errors.As(err, &oe):
		hdr.Set("Retry-After", strconv.Itoa(int((oe.RetryAfter+time.Second-1)/time.Second)))
	case errors.Is(err, ErrUnavailable):
		hdr.Set("Retry-After", "5")
	}
	if status == http.StatusInternalServerError && h.Logger != nil {
		h.Logger.ErrorContext(r.Context(), "gitproto: request failed", "path", r.URL.Path, "err", err)
	}
	if status == 499 {
		return status
	}
	if errors.Is(err, ErrOverloaded) {
		h.stats.overloaded.Add(1)
	}
	msg := http.StatusText(status)
	if status < 500 || status == http.StatusServiceUnavailable || status == http.StatusNotImplemented {
		// Client errors say what was wrong; internal ones keep their
		// details in the log.
		msg = strings.TrimPrefix(err.Error(), "gitproto: ")
	}
	noCache(hdr)
	hdr.Set("Content-Type", "text/plain; charset=utf-8")
	hdr.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	io.WriteString(w, msg+"\n")
	return status
}
