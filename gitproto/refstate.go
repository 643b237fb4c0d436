package gitproto

import (
	"encoding/binary"
	"hash/fnv"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// racyWindow is how recent a change must be for a fingerprint not to be
// trusted. Directory mtimes move with every ref write (git writes a lock
// file and renames it into place), but two writes within one timestamp
// tick look the same; like git's "racy index" check, a state that changed
// within the window is treated as unknown and the caches are bypassed
// until it settles. One second covers filesystems with whole-second times.
const racyWindow = time.Second

// clock returns now(), or time.Now() if now is nil.
func clock(now func() time.Time) time.Time {
	if now != nil {
		return now()
	}
	return time.Now()
}

// refsFingerprint hashes the metadata of everything a ref advertisement
// depends on: HEAD, packed-refs, config and shallow, and every directory
// under refs/ (a loose ref change renames a file in its directory, which
// moves the directory's mtime). It reads no file contents and stats no
// loose ref, so it costs a few syscalls per ref directory. racy reports a
// change within racyWindow of now.
func refsFingerprint(dir string, now time.Time) (fp uint64, racy bool) {
	h := fnv.New64a()
	var buf [40]byte
	add := func(fi fs.FileInfo) {
		binary.LittleEndian.PutUint64(buf[0:], uint64(fi.ModTime().UnixNano()))
		binary.LittleEndian.PutUint64(buf[8:], uint64(fi.Size()))
		var ino, ctime uint64
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			ino = st.Ino
			ctime = uint64(st.Ctim.Sec)*1e9 + uint64(st.Ctim.Nsec)
			if c := time.Unix(0, int64(ctime)); now.Sub(c) < racyWindow {
				racy = true
			}
		}
		binary.LittleEndian.PutUint64(buf[16:], ino)
		binary.LittleEndian.PutUint64(buf[24:], ctime)
		binary.LittleEndian.PutUint64(buf[32:], uint64(fi.Mode()))
		h.Write(buf[:])
		if now.Sub(fi.ModTime()) < racyWindow {
			racy = true
		}
	}
	for _, name := range []string{"HEAD", "packed-refs", "config", "shallow"} {
		h.Write([]byte(name))
		if fi, err := os.Stat(filepath.Join(dir, name)); err == nil {
			add(fi)
		}
	}
	filepath.WalkDir(filepath.Join(dir, "refs"), func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil
		}
		if fi, err := d.Info(); err == nil {
			h.Write([]byte(p))
			add(fi)
		}
		return nil
	})
	return h.Sum64(), racy
}
