package telemetry

import (
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
)

// labelSet is a bounded set of label values: the first max distinct values are kept as
// themselves, every later one is Other. A value is stored as a copy, so a label never pins
// the request it came from.
type labelSet struct {
	mu       sync.RWMutex
	max      int
	vals     map[string]string
	overflow prometheus.Counter
}

func newLabelSet(max int, overflow prometheus.Counter) *labelSet {
	return &labelSet{max: max, vals: make(map[string]string), overflow: overflow}
}

// fold returns v, admitting it while the set has room, or Other.
func (l *labelSet) fold(v string) string {
	l.mu.RLock()
	kept, ok := l.vals[v]
	full := len(l.vals) >= l.max
	l.mu.RUnlock()
	if ok {
		return kept
	}
	if full || !labelValue(v) {
		l.overflow.Inc()
		return Other
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if kept, ok := l.vals[v]; ok {
		return kept
	}
	if len(l.vals) >= l.max {
		l.overflow.Inc()
		return Other
	}
	kept = strings.Clone(v)
	l.vals[kept] = kept
	return kept
}

// labelValue reports whether v may be a label value of its own: short, valid UTF-8, and not
// the fold's own name.
func labelValue(v string) bool {
	return v != "" && v != Other && len(v) <= maxLabelBytes && utf8.ValidString(v)
}

// toolSet holds the tool names each server listed, at most max (server, tool) pairs in all
// and perServer of one server. Only a server's own tools/list answer admits a name (Admit);
// a call names a tool label only when its server listed it, so names a host invents are all
// Other, and an upstream listing thousands of tools takes only its share of the labels.
type toolSet struct {
	mu        sync.RWMutex
	max       int
	perServer int
	n         int
	byServer  map[string]map[string]string
	overflow  prometheus.Counter
}

func newToolSet(max, perServer int, overflow prometheus.Counter) *toolSet {
	return &toolSet{max: max, perServer: perServer, byServer: make(map[string]map[string]string), overflow: overflow}
}

// admit records the names server listed, while there is room.
func (t *toolSet) admit(server string, names []string) {
	if len(names) == 0 || !labelValue(server) {
		return
	}
	t.mu.RLock()
	known := t.byServer[server]
	missing := false
	for _, n := range names {
		if _, ok := known[n]; !ok && labelValue(n) {
			missing = true
			break
		}
	}
	full := t.n >= t.max || len(known) >= t.perServer
	t.mu.RUnlock()
	if !missing || full {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	known = t.byServer[server]
	if known == nil {
		known = make(map[string]string)
		t.byServer[strings.Clone(server)] = known
	}
	for _, n := range names {
		if t.n >= t.max || len(known) >= t.perServer {
			return
		}
		if _, ok := known[n]; ok || !labelValue(n) {
			continue
		}
		kept := strings.Clone(n)
		known[kept] = kept
		t.n++
	}
}

// label returns tool as a label of server's calls: itself when the server listed it and it
// was admitted, Other otherwise.
func (t *toolSet) label(server, tool string) string {
	t.mu.RLock()
	kept, ok := t.byServer[server][tool]
	t.mu.RUnlock()
	if ok {
		return kept
	}
	t.overflow.Inc()
	return Other
}
