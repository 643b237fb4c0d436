package counting

import "context"

// HoldWriteLockForTest takes the database's write lock, closes held once
// it has it, and keeps it until release is closed, as another process's
// long transaction would.
func (s *SQLiteStore) HoldWriteLockForTest(held chan<- struct{}, release <-chan struct{}) {
	defer close(held)
	tx, err := s.w.BeginTx(context.Background(), nil)
	if err != nil {
		return
	}
	defer tx.Rollback()
	if _, err := tx.Exec(`INSERT INTO views (id, bucket, n) VALUES ('lock', 0, 1) ON CONFLICT (id, bucket) DO UPDATE SET n = n + 1`); err != nil {
		return
	}
	held <- struct{}{}
	<-release
}

// ShardsForTest returns the number of live shards.
func ShardsForTest(c *Counter) int { return len(c.shards.list()) }
