package counting_test

import (
	"context"
	"database/sql"
	"fmt"
	"sync"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/forgekit/forgekit/counting"
	"github.com/forgekit/forgekit/internal/testenv"
)

// TestOnPostgres runs every store test (those that open their store with
// open or shared) again on PostgreSQL, each in a fresh database of one
// throwaway cluster.
func TestOnPostgres(t *testing.T) {
	testenv.RunOnPostgres(t, "open", "shared")
}

func openPostgresAt(t *testing.T, dsn string) *counting.PostgresStore {
	t.Helper()
	db, err := sql.Open("pgx", dsn)
	require.NoError(t, err)
	st, err := counting.NewPostgres(context.Background(), db)
	require.NoError(t, err)
	t.Cleanup(func() { st.Close() })
	return st
}

func openPostgres(t *testing.T) *counting.PostgresStore {
	return openPostgresAt(t, testenv.OnPostgres().NewDatabase(t))
}

// TestWritersShareOneDatabase: several writers, each with its own store
// and counter (as instances on one machine, or on several with
// PostgreSQL, would have), flush concurrently into one database with
// overlapping ids: the totals are exact and no flush fails (no
// deadlock).
func TestWritersShareOneDatabase(t *testing.T) {
	t.Parallel()
	opener := shared(t)
	const writers, ids, rounds = 4, 50, 20
	var wg sync.WaitGroup
	counters := make([]*counting.Counter, writers)
	for w := range writers {
		c := counting.New(opener())
		c.Interval = time.Hour // flushed by hand, all at once
		counters[w] = c
	}
	for round := range rounds {
		for _, c := range counters {
			for i := range ids {
				c.Add(fmt.Sprintf("v%03d", (i*7+round)%ids), 1)
			}
		}
		for _, c := range counters {
			wg.Go(func() { assert.NoError(t, c.Flush(context.Background())) })
		}
		wg.Wait()
	}
	for _, c := range counters {
		require.NoError(t, c.Close())
		assert.Zero(t, c.Stats().FlushErrors)
	}
	st := opener()
	top, err := st.Sums(context.Background(), counting.Query{From: past, To: future, Limit: ids})
	require.NoError(t, err)
	require.Len(t, top, ids)
	var total int64
	for _, s := range top {
		assert.Equal(t, int64(writers*rounds), s.N, s.ID)
		total += s.N
	}
	assert.Equal(t, int64(writers*rounds*ids), total)
}
