package gitproto

import (
	"sync/atomic"
	"time"
)

// RequestInfo describes one finished request. Handler passes it to
// Handler.Observe; it must not be retained after Observe returns.
type RequestInfo struct {
	Service       Service       // empty for dumb HTTP and unroutable requests
	AdvertiseRefs bool          // an info/refs request
	Command       string        // v2 command (ls-refs, fetch, ...) or "fetch" for v0/v1 upload-pack POSTs
	Version       int           // protocol version asked for
	Repo          string        // repository name from the URL
	Principal     string        // from the Authorizer
	BytesIn       int64         // request body bytes after decompression
	BytesOut      int64         // response body bytes
	Wants, Haves  int           // upload-pack negotiation lines
	FullClone     bool          // a fetch with no haves
	CacheHit      bool          // served by the pack or advertisement cache (including joining a generation in flight)
	QueueWait     time.Duration // time spent waiting for admission
	Duration      time.Duration
	Status        int   // HTTP status sent
	Err           error // why the request failed, if it did
}

// Stats are cumulative counters of a Handler.
type Stats struct {
	Requests     int64 // requests routed to the handler
	Sessions     int64 // sessions served (SSH, git://), counted apart from Requests
	UploadPacks  int64 // upload-pack POSTs
	ReceivePacks int64 // receive-pack POSTs
	Adverts      int64 // info/refs requests
	Dumb         int64 // dumb-HTTP file requests
	Errors       int64 // requests answered with a 4xx or 5xx status, or aborted, but for Challenges
	Challenges   int64 // 401s that asked a request without credentials for some (every authenticated git client's first request): not errors
	Overloaded   int64 // requests refused with 503 by admission control
	BytesIn      int64
	BytesOut     int64
}

type handlerStats struct {
	requests, sessions, uploadPacks, receivePacks, adverts, dumb, errors, challenges, overloaded, bytesIn, bytesOut atomic.Int64
}

func (s *handlerStats) snapshot() Stats {
	return Stats{
		Requests:     s.requests.Load(),
		Sessions:     s.sessions.Load(),
		UploadPacks:  s.uploadPacks.Load(),
		ReceivePacks: s.receivePacks.Load(),
		Adverts:      s.adverts.Load(),
		Dumb:         s.dumb.Load(),
		Errors:       s.errors.Load(),
		Challenges:   s.challenges.Load(),
		Overloaded:   s.overloaded.Load(),
		BytesIn:      s.bytesIn.Load(),
		BytesOut:     s.bytesOut.Load(),
	}
}
