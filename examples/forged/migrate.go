package main

import (
	"context"
	"database/sql"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/forgekit/forgekit/counting"
	"github.com/forgekit/forgekit/counting/sqlite"
	"github.com/forgekit/forgekit/forge"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"
)

// The tables a forge keeps, in an order that respects foreign keys.
var (
	metaTables  = []string{"users", "tokens", "repos", "collaborators", "protected_branches", "webhooks", "webhook_deliveries", "pushes", "ssh_keys"}
	viewsTables = []string{"views", "views_daily", "uniques", "counting_meta"}
	// identityTables have an id column whose sequence must continue after
	// the copied ids.
	identityTables = []string{"users", "tokens", "repos", "webhooks", "webhook_deliveries", "pushes", "ssh_keys"}
)

// migrateBatch is the rows of one INSERT.
const migrateBatch = 500

// migrate copies a forge's SQLite databases (DIR/forge.db and
// DIR/views.db) into an empty PostgreSQL database in one transaction,
// then checks that every table has as many rows on both sides and the
// view counts the same sums.
func migrate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("forged migrate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	from := fs.String("from", "", "`sqlite:DIR`, the data directory (or sqlite:DIR/forge.db)")
	to := fs.String("to", "", "`postgres://...`, an empty database")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: forged migrate -from sqlite:DIR -to postgres://...\n\nCopies the metadata and the view counts, then verifies them.\nServe with -db postgres://... afterwards.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	dir, ok := strings.CutPrefix(*from, "sqlite:")
	if !ok || dir == "" {
		return errors.New("-from: want sqlite:DIR, the data directory")
	}
	if !forge.IsPostgresDSN(*to) {
		return errors.New("-to: want a postgres:// URL")
	}
	if strings.HasSuffix(dir, ".db") {
		dir = filepath.Dir(dir)
	}
	metaPath, viewsPath := filepath.Join(dir, "forge.db"), filepath.Join(dir, "views.db")
	if _, err := os.Stat(metaPath); err != nil {
		return fmt.Errorf("-from: %w", err)
	}

	// Bring both sources to the current schema, and make the target's.
	m, err := forge.OpenMeta(ctx, metaPath)
	if err != nil {
		return err
	}
	m.Close()
	if v, err := sqlite.Open(viewsPath); err != nil {
		return err
	} else {
		v.Close()
	}
	if m, err = forge.OpenMetaDSN(ctx, *to); err != nil {
		return err
	}
	m.Close()
	dst, err := sql.Open("pgx", *to)
	if err != nil {
		return err
	}
	defer dst.Close()
	if _, err := counting.NewPostgres(ctx, dst); err != nil {
		return err
	}
	var users int
	if err := dst.QueryRowContext(ctx, `SELECT COUNT(*) FROM users`).Scan(&users); err != nil {
		return err
	}
	if users > 0 {
		return errors.New("-to: the database already has users; migrate into an empty one")
	}

	srcMeta, err := sql.Open("sqlite3", "file:"+metaPath+"?mode=ro")
	if err != nil {
		return err
	}
	defer srcMeta.Close()
	srcViews, err := sql.Open("sqlite3", "file:"+viewsPath+"?mode=ro")
	if err != nil {
		return err
	}
	defer srcViews.Close()
	tx, err := dst.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	copied := map[string]int64{}
	for _, t := range metaTables {
		if copied[t], err = copyTable(ctx, srcMeta, tx, t, ""); err != nil {
			return err
		}
	}
	for _, t := range viewsTables {
		conflict := ""
		if t == "counting_meta" {
			conflict = " ON CONFLICT (k) DO UPDATE SET v = excluded.v"
		}
		if copied[t], err = copyTable(ctx, srcViews, tx, t, conflict); err != nil {
			return err
		}
	}
	for _, t := range identityTables {
		if _, err := tx.ExecContext(ctx, `SELECT setval(pg_get_serial_sequence('`+t+`', 'id'), COALESCE((SELECT MAX(id) FROM `+t+`), 0) + 1, false)`); err != nil {
			return fmt.Errorf("%s: %w", t, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return err
	}

	// Verify.
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "table\tcopied\tin source\tin target\t\n")
	bad := false
	check := func(src *sql.DB, t, q string) {
		var a, b int64
		errA := src.QueryRowContext(ctx, q).Scan(&a)
		errB := dst.QueryRowContext(ctx, q).Scan(&b)
		mark := ""
		switch {
		case errA != nil || errB != nil: // two failed counts are not two equal ones
			mark, bad = fmt.Sprintf("CANNOT CHECK: %v", errors.Join(errA, errB)), true
		case a != b:
			mark, bad = "MISMATCH", true
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%s\n", t, copied[t], a, b, mark)
	}
	for _, t := range metaTables {
		check(srcMeta, t, `SELECT COUNT(*) FROM `+t)
	}
	for _, t := range viewsTables {
		check(srcViews, t, `SELECT COUNT(*) FROM `+t)
	}
	for _, t := range []string{"views", "views_daily"} {
		check(srcViews, t+" (sum of n)", `SELECT COALESCE(SUM(n), 0) FROM `+t)
	}
	tw.Flush()
	if bad {
		return errors.New("the copy does not match its source")
	}
	jobs, err := copyJobs(ctx, dir, *to)
	if err != nil {
		return fmt.Errorf("queued jobs: %w", err)
	}
	fmt.Fprintf(stdout, "queued jobs copied: %d\n", jobs)
	fmt.Fprintf(stdout, "migrated %s to PostgreSQL; serve with -db %s\n", dir, redactDSN(*to))
	return nil
}

// copyTable copies every row of table, converting SQLite's 0 and 1 where
// the target column is a boolean.
func copyTable(ctx context.Context, src *sql.DB, dst *sql.Tx, table, conflict string) (int64, error) {
	types := map[string]string{}
	trows, err := dst.QueryContext(ctx, `SELECT column_name, data_type FROM information_schema.columns WHERE table_name = $1`, table)
	if err != nil {
		return 0, err
	}
	for trows.Next() {
		var c, t string
		if err := trows.Scan(&c, &t); err != nil {
			trows.Close()
			return 0, err
		}
		types[c] = t
	}
	trows.Close()
	rows, err := src.QueryContext(ctx, `SELECT * FROM `+table)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", table, err)
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return 0, err
	}
	var n int64
	var batch []any
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		var b strings.Builder
		fmt.Fprintf(&b, "INSERT INTO %s (%s) VALUES ", table, strings.Join(cols, ", "))
		for r := 0; r < len(batch)/len(cols); r++ {
			if r > 0 {
				b.WriteString(", ")
			}
			b.WriteByte('(')
			for c := range cols {
				if c > 0 {
					b.WriteString(", ")
				}
				fmt.Fprintf(&b, "$%d", r*len(cols)+c+1)
			}
			b.WriteByte(')')
		}
		b.WriteString(conflict)
		if _, err := dst.ExecContext(ctx, b.String(), batch...); err != nil {
			return fmt.Errorf("%s: %w", table, err)
		}
		batch = batch[:0]
		return nil
	}
	for rows.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return 0, err
		}
		for i, c := range cols {
			if types[c] == "boolean" {
				if v, ok := vals[i].(int64); ok {
					vals[i] = v != 0
				}
			}
		}
		batch = append(batch, vals...)
		n++
		if n%migrateBatch == 0 {
			if err := flush(); err != nil {
				return 0, err
			}
		}
	}
	if err := rows.Err(); err != nil {
		return 0, err
	}
	return n, flush()
}

// redactDSN hides a password in a DSN for printing.
func redactDSN(dsn string) string {
	if u, err := url.Parse(dsn); err == nil {
		return u.Redacted()
	}
	return "the target"
}

// rawJob is a job's kind and encoded arguments, to queue it again
// elsewhere.
type rawJob struct {
	kind string
	args []byte
}

func (j rawJob) Kind() string                 { return j.kind }
func (j rawJob) MarshalJSON() ([]byte, error) { return j.args, nil }

// copyJobs queues in the PostgreSQL database dsn the jobs of DIR/queue.db
// that have not run to their end: waiting, scheduled, waiting for a
// retry, or running when the server stopped (queued as waiting). Their
// arguments, queue, metadata, tries left and times carry over; the
// attempts made so far start again from zero.
func copyJobs(ctx context.Context, dir, dsn string) (int, error) {
	if _, err := os.Stat(filepath.Join(dir, "queue.db")); errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	src, srcDB, err := openQueueAdmin(ctx, dir, "")
	if err != nil {
		return 0, err
	}
	defer srcDB.Close()
	dst, dstDB, err := openQueueAdmin(ctx, "", dsn)
	if err != nil {
		return 0, err
	}
	defer dstDB.Close()
	params := river.NewJobListParams().States(rivertype.JobStateAvailable, rivertype.JobStatePending, rivertype.JobStateScheduled,
		rivertype.JobStateRetryable, rivertype.JobStateRunning).OrderBy(river.JobListOrderByID, river.SortOrderAsc).First(500)
	n := 0
	for {
		res, err := src.JobList(ctx, params)
		if err != nil {
			return n, err
		}
		if len(res.Jobs) == 0 {
			return n, nil
		}
		batch := make([]river.InsertManyParams, len(res.Jobs))
		for i, j := range res.Jobs {
			batch[i] = river.InsertManyParams{Args: rawJob{kind: j.Kind, args: j.EncodedArgs}, InsertOpts: &river.InsertOpts{
				Queue: j.Queue, Priority: j.Priority, Metadata: j.Metadata, Tags: j.Tags,
				MaxAttempts: max(j.MaxAttempts-j.Attempt, 1), ScheduledAt: j.ScheduledAt,
			}}
		}
		if _, err := dst.InsertMany(ctx, batch); err != nil {
			return n, err
		}
		n += len(batch)
		params = params.After(res.LastCursor)
	}
}
