package stdio

import (
	"bytes"
	"errors"
	"io"
	"os"
	"strconv"
	"strings"
)

// procStat is what the bridge reads of /proc/<pid>/stat.
type procStat struct {
	pid, ppid, pgid, sid int
	state                byte
	// start is the process's start time in clock ticks since boot: with the pid it names one
	// process for good, since a reused pid has a later start.
	start uint64
}

// readStat reads /proc/<pid>/stat.
func readStat(pid int) (procStat, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procStat{}, err
	}
	return parseStat(pid, b)
}

var errBadStat = errors.New("malformed /proc stat")

// parseStat parses a stat line. The command name may hold spaces and parentheses, so fields
// are counted from the last ')'.
func parseStat(pid int, b []byte) (procStat, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procStat{}, errBadStat
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); starttime is field 22.
	if len(f) < 20 || len(f[0]) != 1 {
		return procStat{}, errBadStat
	}
	st := procStat{pid: pid, state: f[0][0]}
	var errs [4]error
	st.ppid, errs[0] = strconv.Atoi(f[1])
	st.pgid, errs[1] = strconv.Atoi(f[2])
	st.sid, errs[2] = strconv.Atoi(f[3])
	st.start, errs[3] = strconv.ParseUint(f[19], 10, 64)
	if err := errors.Join(errs[:]...); err != nil {
		return procStat{}, errBadStat
	}
	return st, nil
}

// maxProcs bounds one scan of /proc (pid_max is at most 4M; a scan stops there).
const maxProcs = 1 << 22

// scanProcs returns the stat of every process it can read, zombies included.
func scanProcs() []procStat {
	d, err := os.Open("/proc")
	if err != nil {
		return nil
	}
	defer d.Close()
	var out []procStat
	for len(out) < maxProcs {
		names, err := d.Readdirnames(1024)
		for _, n := range names {
			pid, perr := strconv.Atoi(n)
			if perr != nil || pid <= 0 {
				continue
			}
			if st, serr := readStat(pid); serr == nil {
				out = append(out, st)
			}
		}
		if err != nil {
			break
		}
	}
	return out
}

// maxEnviron bounds how much of a process's environment is read to find a marker.
const maxEnviron = 64 << 10

// envValue returns the value of key in the initial environment of pid. A process the bridge
// may not read (another user's) has none.
func envValue(pid int, key string) (string, bool) {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/environ")
	if err != nil {
		return "", false
	}
	defer f.Close()
	b, _ := io.ReadAll(io.LimitReader(f, maxEnviron))
	prefix := []byte(key + "=")
	for len(b) > 0 {
		var entry []byte
		entry, b, _ = bytes.Cut(b, []byte{0})
		if v, ok := bytes.CutPrefix(entry, prefix); ok {
			return string(v), true
		}
	}
	return "", false
}

// descends reports whether pid descends from ancestor in the parent map.
func descends(pid, ancestor int, parent map[int]int) bool {
	for range 256 { // bounds a cycle a racy scan could show
		p, ok := parent[pid]
		if !ok || p <= 1 {
			return false
		}
		if p == ancestor {
			return true
		}
		pid = p
	}
	return false
}
