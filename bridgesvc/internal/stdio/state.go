package stdio

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The state directory holds what a bridge needs to end, after a crash, the children the
// crashed run left: one JSON file rewritten atomically (a temporary file renamed over it)
// whenever a child starts or is reaped. It is not fsynced: it guards against the gateway
// dying, and a machine that crashed took every child with it. A lock file held with flock
// keeps two live bridges off one state directory (each would end the other's children).
const (
	stateName = "stdio-children.json"
	lockName  = "lock"
	// maxStateBytes bounds the file read at start (256 children take about 40 KB).
	maxStateBytes = 4 << 20
	// maxRecords bounds the records honoured from it.
	maxRecords = 1 << 14
	// recoverTimeout bounds the wait for one recorded cgroup to empty at start.
	recoverTimeout = 5 * time.Second
)

// record is one live child as the state file has it.
type record struct {
	// Marker is the child's EnvMarker token: descendants that kept the environment carry it.
	Marker string `json:"marker"`
	// Pid and Start name the child process (Start defeats pid reuse); zero until started.
	Pid   int    `json:"pid,omitempty"`
	Start uint64 `json:"start,omitempty"`
	// Cgroup is the child's cgroup, recorded before the child is cloned into it.
	Cgroup string `json:"cgroup,omitempty"`
}

type stateDoc struct {
	Version  int      `json:"version"`
	Children []record `json:"children"`
}

// stateDir is an open state directory.
type stateDir struct {
	dir  string
	lock *os.File
	mu   sync.Mutex // orders the writes
}

// openState locks dir (creating it) and returns the records of the previous run. A file that
// cannot be read as a state file is logged and ignored.
func openState(dir string, log *slog.Logger) (*stateDir, []record, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, nil, fmt.Errorf("state dir: %w", err)
	}
	lock, err := os.OpenFile(filepath.Join(dir, lockName), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, nil, fmt.Errorf("state dir lock: %w", err)
	}
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		_ = lock.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, nil, fmt.Errorf("state dir %s is in use by another bridge", dir)
		}
		return nil, nil, fmt.Errorf("state dir lock: %w", err)
	}
	st := &stateDir{dir: dir, lock: lock}
	recs, err := st.read()
	if err != nil {
		log.Warn("stdio state file unreadable; ignored", "dir", dir, "err", err)
		recs = nil
	}
	return st, recs, nil
}

func (st *stateDir) read() ([]record, error) {
	f, err := os.Open(filepath.Join(st.dir, stateName))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxStateBytes+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxStateBytes {
		return nil, fmt.Errorf("over %d bytes", maxStateBytes)
	}
	var doc stateDoc
	if err := json.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("parse: %w", err)
	}
	if doc.Version != 1 {
		return nil, fmt.Errorf("version %d", doc.Version)
	}
	if len(doc.Children) > maxRecords {
		return nil, fmt.Errorf("%d records, over %d", len(doc.Children), maxRecords)
	}
	return doc.Children, nil
}

// save replaces the file with recs; st.mu must be held, so that writes land in order.
func (st *stateDir) save(recs []record) error {
	b, err := json.Marshal(stateDoc{Version: 1, Children: recs})
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(st.dir, stateName+".*")
	if err != nil {
		return fmt.Errorf("write state: %w", err)
	}
	_, werr := tmp.Write(b)
	cerr := tmp.Close()
	if err := errors.Join(werr, cerr); err != nil {
		_ = os.Remove(tmp.Name())
		return fmt.Errorf("write state: %w", err)
	}
	if err := os.Rename(tmp.Name(), filepath.Join(st.dir, stateName)); err != nil {
		_ = os.Remove(tmp.Name())
		return fmt.Errorf("write state: %w", err)
	}
	return nil
}

func (st *stateDir) close() { _ = st.lock.Close() }

// endRecorded ends the children of a previous run: every recorded cgroup is killed and
// removed; a recorded child that still runs (same pid and start time) has its process group
// killed; and every process carrying a recorded marker is killed. It returns how many
// records still had something running and the records whose cgroup could not be removed.
func endRecorded(recs []record, log *slog.Logger) (int, []record) {
	mount, _ := cgroup2Mount()
	markers := map[string]bool{}
	found := 0
	var left []record
	for _, r := range recs {
		live := false
		if r.Cgroup != "" {
			switch {
			case !ours(r.Cgroup, mount):
				log.Warn("stdio state names a cgroup that is not a bridge's; ignored", "cgroup", r.Cgroup)
			case exists(r.Cgroup):
				live = true
				if err := removeCgroup(r.Cgroup, recoverTimeout); err != nil {
					log.Warn("cannot remove the cgroup of a previous run's child", "cgroup", r.Cgroup, "err", err)
					left = append(left, r)
				}
			}
		}
		if r.Pid > 1 && r.Start > 0 {
			if st, err := readStat(r.Pid); err == nil && st.start == r.Start && st.state != 'Z' {
				live = true
				_ = syscall.Kill(-r.Pid, syscall.SIGKILL)
				_ = syscall.Kill(r.Pid, syscall.SIGKILL)
			}
		}
		if len(r.Marker) == 32 {
			markers[r.Marker] = true
		}
		if live {
			found++
		}
	}
	if len(markers) == 0 {
		return found, left
	}
	self := os.Getpid()
	for range 20 {
		killed := 0
		for _, st := range scanProcs() {
			if st.pid == self || st.state == 'Z' {
				continue
			}
			if v, ok := envValue(st.pid, EnvMarker); ok && markers[v] {
				_ = syscall.Kill(st.pid, syscall.SIGKILL)
				killed++
			}
		}
		if killed == 0 {
			break
		}
		found += killed
	}
	return found, left
}
