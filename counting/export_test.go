package counting

import "context"

// HoldWriteLockForTest takes the database's write lock until release is
// closed, as another process's long transaction would.
func (s *SQLiteStore) HoldWriteLockForTest(release <-chan struct{}) {
	tx, err := s.w.BeginTx(context.Background(), nil)
	if err != nil {
		return
	}
	tx.Exec(`INSERT INTO views (id, bucket, n) VALUES ('lock', 0, 1) ON CONFLICT (id, bucket) DO UPDATE SET n = n + 1`)
	<-release
	tx.Rollback()
}
