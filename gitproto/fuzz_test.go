package gitproto

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

// The corpus of real client requests captured from git 2.39 lives in
// testdata/fuzz; run a fuzzer with, for example,
//
//	go test ./gitproto -run '^$' -fuzz FuzzParseUploadRequest -fuzztime 1m

func FuzzPktReader(f *testing.F) {
	f.Add([]byte("0000"))
	f.Add([]byte("0001000200030004"))
	f.Add([]byte("0006a\n0000"))
	f.Add([]byte("fff0"))
	f.Fuzz(func(t *testing.T, data []byte) {
		p := newPktReader(bytes.NewReader(data))
		var consumed int64
		for {
			kind, payload, err := p.next()
			if err == io.EOF {
				if consumed != int64(len(data)) {
					t.Fatalf("EOF after %d of %d bytes", consumed, len(data))
				}
				return
			}
			if err != nil {
				if !errors.Is(err, ErrMalformed) {
					t.Fatalf("error %v does not wrap ErrMalformed", err)
				}
				return
			}
			consumed += 4
			if kind == pktData {
				if len(payload) > maxPktPayload {
					t.Fatalf("payload of %d bytes", len(payload))
				}
				consumed += int64(len(payload))
			}
			if p.n != consumed {
				t.Fatalf("offset %d, consumed %d", p.n, consumed)
			}
		}
	})
}

func FuzzParseUploadRequest(f *testing.F) {
	f.Add([]byte("0032want 0123456789012345678901234567890123456789\n00000009done\n"), 0)
	f.Add([]byte("0014command=ls-refs\n0000"), 2)
	f.Fuzz(func(t *testing.T, data []byte, version int) {
		u, err := parseUploadRequest(data, version&3)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		if u.wants < 0 || u.haves < 0 {
			t.Fatal("negative counts")
		}
		if u.fullClone() && u.haves != 0 {
			t.Fatal("a full clone with haves")
		}
	})
}

func FuzzReadReceiveCommands(f *testing.F) {
	f.Add([]byte("00670000000000000000000000000000000000000000 0123456789012345678901234567890123456789 refs/heads/main\x00report-status0000PACK"))
	f.Fuzz(func(t *testing.T, data []byte) {
		rr, err := readReceiveCommands(bytes.NewReader(data))
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrTooLarge) {
				t.Fatalf("error %v wraps neither ErrMalformed nor ErrTooLarge", err)
			}
			return
		}
		// Replaying head followed by the rest must give the input back.
		rest, _ := io.ReadAll(rr.rest)
		if got := append(append([]byte{}, rr.head...), rest...); !bytes.Equal(got, data) {
			t.Fatalf("replay differs from input:\n%q\n%q", got, data)
		}
		for _, u := range rr.updates {
			if !strings.HasPrefix(u.Ref, "refs/") || len(u.Old) != len(u.New) {
				t.Fatalf("bad update accepted: %+v", u)
			}
		}
	})
}

func FuzzParseGitProtocol(f *testing.F) {
	f.Add("version=2")
	f.Fuzz(func(t *testing.T, v string) {
		n, err := ParseGitProtocol(v)
		if err != nil {
			if !errors.Is(err, ErrBadProtocol) {
				t.Fatalf("error %v does not wrap ErrBadProtocol", err)
			}
			return
		}
		if n < 0 || n > 2 {
			t.Fatalf("version %d", n)
		}
		// Whatever is accepted is safe to put in an environment variable.
		if strings.ContainsAny(v, "\x00\n\r ;$`'\"\\") {
			t.Fatalf("accepted unsafe value %q", v)
		}
	})
}

func FuzzPktTracker(f *testing.F) {
	f.Add([]byte("0008NAK\n0009\x01PACK0000"), uint8(3))
	f.Fuzz(func(t *testing.T, data []byte, split uint8) {
		var whole, pieces pktTracker
		whole.feed(data)
		step := int(split%16) + 1
		for i := 0; i < len(data); i += step {
			pieces.feed(data[i:min(i+step, len(data))])
		}
		if whole != pieces {
			t.Fatalf("state depends on how the stream was split: %+v vs %+v", whole, pieces)
		}
	})
}

func TestPktTrackerBoundaries(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		stream   string
		boundary bool
		sideband bool
	}{
		{name: "empty", stream: "", boundary: true},
		{name: "after flush", stream: "0008NAK\n0000", boundary: true},
		{name: "mid header", stream: "0008NAK\n00", boundary: false},
		{name: "mid payload", stream: "0009\x01PA", boundary: false, sideband: true},
		{name: "after sideband packet", stream: "0008NAK\n0009\x01PACK", boundary: true, sideband: true},
		{name: "raw pack", stream: "0008NAK\nPACK\x00\x00", boundary: false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var tr pktTracker
			tr.feed([]byte(tc.stream))
			if tr.atBoundary() != tc.boundary || tr.sideband() != tc.sideband {
				t.Fatalf("boundary %v sideband %v, want %v %v", tr.atBoundary(), tr.sideband(), tc.boundary, tc.sideband)
			}
		})
	}
}
