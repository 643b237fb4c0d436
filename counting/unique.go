package counting

import (
	"context"
	"errors"
	"sync"
	"time"
)

// Sketch is a unique-viewer sketch of one id and one day.
type Sketch struct {
	ID   string
	Day  time.Time // start of the day, UTC
	Data []byte
}

// UniqueStore is implemented by stores that keep unique-viewer sketches.
// AddSketches must merge (register-wise maximum), never overwrite.
type UniqueStore interface {
	AddSketches(ctx context.Context, s []Sketch) error
	Sketches(ctx context.Context, id string, from, to time.Time) ([][]byte, error)
}

// ErrNoUniques is returned by Uniques when Unique is off or the store
// keeps no sketches.
var ErrNoUniques = errors.New("counting: unique viewers are not kept")

type uniqueKey struct {
	id  string
	day int64
}

const uniqueShards = 16

type uniqueShard struct {
	mu       sync.Mutex // guards sketches
	sketches map[uniqueKey]*hll
}

func (c *Counter) addUnique(id, viewer string, now time.Time) {
	k := uniqueKey{id: id, day: now.UTC().Truncate(24 * time.Hour).Unix()}
	sh := &c.uniques[hash64(id)%uniqueShards]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if sh.sketches == nil {
		sh.sketches = make(map[uniqueKey]*hll)
	}
	s := sh.sketches[k]
	if s == nil {
		s = newHLL()
		sh.sketches[k] = s
	}
	s.add(viewer)
}

// flushUniques hands the sketches to the store; on failure they are
// merged back, to be retried.
func (c *Counter) flushUniques(ctx context.Context) error {
	us, ok := c.store.(UniqueStore)
	if !ok || !c.Unique {
		return nil
	}
	taken := make(map[uniqueKey]*hll)
	for i := range c.uniques {
		sh := &c.uniques[i]
		sh.mu.Lock()
		for k, s := range sh.sketches {
			taken[k] = s
		}
		sh.sketches = nil
		sh.mu.Unlock()
	}
	if len(taken) == 0 {
		return nil
	}
	batch := make([]Sketch, 0, len(taken))
	for k, s := range taken {
		batch = append(batch, Sketch{ID: k.id, Day: time.Unix(k.day, 0).UTC(), Data: s.marshal()})
	}
	if err := us.AddSketches(ctx, batch); err != nil {
		for k, s := range taken {
			sh := &c.uniques[hash64(k.id)%uniqueShards]
			sh.mu.Lock()
			if sh.sketches == nil {
				sh.sketches = make(map[uniqueKey]*hll)
			}
			if cur := sh.sketches[k]; cur != nil {
				cur.merge(s)
			} else {
				sh.sketches[k] = s
			}
			sh.mu.Unlock()
		}
		return err
	}
	return nil
}

// Uniques estimates the distinct viewers of id in the days that start in
// [from, to) (about 1.6% standard error), unflushed hits included.
func (c *Counter) Uniques(ctx context.Context, id string, from, to time.Time) (int64, error) {
	us, ok := c.store.(UniqueStore)
	if !ok || !c.Unique {
		return 0, ErrNoUniques
	}
	if !to.After(from) {
		return 0, ErrWindow
	}
	start := time.Now()
	blobs, err := us.Sketches(ctx, id, from.UTC(), to.UTC())
	c.queried(ctx, start)
	if err != nil {
		return 0, err
	}
	sum := newHLL()
	for _, b := range blobs {
		s, err := unmarshalHLL(b)
		if err != nil {
			continue // a damaged sketch is skipped, not fatal
		}
		sum.merge(s)
	}
	sh := &c.uniques[hash64(id)%uniqueShards]
	sh.mu.Lock()
	for k, s := range sh.sketches {
		if d := time.Unix(k.day, 0); k.id == id && !d.Before(from) && d.Before(to) {
			sum.merge(s)
		}
	}
	sh.mu.Unlock()
	return sum.estimate(), nil
}

const uniqueSchema = `
CREATE TABLE IF NOT EXISTS uniques (
	id     TEXT    NOT NULL,
	day    INTEGER NOT NULL, -- Unix seconds of the day start, UTC
	sketch BLOB    NOT NULL,
	PRIMARY KEY (id, day)
) WITHOUT ROWID;`
