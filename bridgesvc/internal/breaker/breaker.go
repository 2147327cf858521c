// Package breaker is the bridge's circuit breaker per upstream server: closed, it lets calls
// through and counts consecutive failures; after enough of them close together it opens and
// refuses calls for a cool-down; then, half-open, it admits a bounded number of probe calls,
// and the first probe's success closes it while a probe's failure opens it again.
//
// The package knows nothing of what a failure is: the caller admits a call, sends it, and
// reports a Result. One mutex orders admissions and results, so that probe admission is
// exact however many calls arrive at once.
package breaker

import (
	"fmt"
	"sync"
	"time"
)

// State is where a breaker is.
type State int

// The states of a breaker.
const (
	Closed State = iota
	Open
	HalfOpen
)

func (s State) String() string {
	switch s {
	case Closed:
		return "closed"
	case Open:
		return "open"
	case HalfOpen:
		return "half-open"
	}
	return fmt.Sprintf("State(%d)", int(s))
}

// Settings tune one server's breaker. They are read at each admission, so a server whose
// settings change takes the new ones at its next call.
type Settings struct {
	// Failures is how many consecutive failures open the breaker; 0 turns it off.
	Failures int
	// Window: a failure more than Window after the first of the current run starts a new run.
	Window time.Duration
	// Cooldown is how long an open breaker refuses calls before it admits probes.
	Cooldown time.Duration
	// Probes is how many probe calls a half-open breaker lets through at a time (at least 1).
	Probes int
}

// Result is what became of an admitted call, as far as the upstream's health is concerned.
type Result int

const (
	// Neutral says nothing of the upstream: the host went away, the gateway refused the
	// call itself. A probe that ends neutral frees its slot for another.
	Neutral Result = iota
	// Success: the upstream answered.
	Success
	// Failure: the upstream could not be started or reached, failed, or broke the protocol:
	// nothing the caller could have caused.
	Failure
	// CallerFailure: a failure one caller could cause on its own (a call it made slow enough
	// to time out, its own stdio child exiting). A run of them opens the breaker only when
	// they came from two callers or more, so that one host cannot shut a shared server for
	// every tenant; a probe that ends so frees its slot without deciding anything.
	CallerFailure
)

// Transition is one change of a breaker's state, reported to Options.OnTransition.
type Transition struct {
	Server   string
	From, To State
	Time     time.Time
	// Failures is the run of failures that opened the breaker (To == Open after Closed).
	Failures int
	// RetryAt is when an open breaker admits probes (To == Open).
	RetryAt time.Time
	// Probes is how many probes a half-open breaker admits (To == HalfOpen).
	Probes int
	// Reason says why, in words fit for a log line and an audit record.
	Reason string
}

// OpenError is the refusal of a call by a breaker that is open, or half-open with every
// probe slot taken.
type OpenError struct {
	Server  string
	State   State
	RetryAt time.Time
}

func (e *OpenError) Error() string {
	return fmt.Sprintf("the circuit breaker of server %q is %s; calls are refused until %s", e.Server, e.State, e.RetryAt.UTC().Format(time.RFC3339))
}

// probeRetry is what a call refused while the probes are out is told to wait: a probe ends
// the half-open state as soon as it succeeds.
const probeRetry = time.Second

// Options configure a Set.
type Options struct {
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// OnTransition is called with each transition, in order, under the Set's lock: it must
	// not block or call back into the Set.
	OnTransition func(Transition)
}

// Set holds the breakers of every server, created on a server's first call.
type Set struct {
	opts     Options
	mu       sync.Mutex
	breakers map[string]*breaker
}

type breaker struct {
	state State
	// gen counts transitions: a ticket of an earlier generation reports nothing (a call let
	// through while closed that fails after the breaker opened must not reopen it later).
	gen      uint64
	failures int       // the current run of consecutive failures (closed)
	first    time.Time // when the run began
	hard     bool      // the run holds a Failure (not only CallerFailures)
	caller   string    // the caller of the run's first CallerFailure
	callers  bool      // the run's CallerFailures came from two callers or more
	retryAt  time.Time // open: when probes begin
	probes   int       // half-open: probes in flight
}

// New returns an empty Set.
func New(opts Options) *Set {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Set{opts: opts, breakers: map[string]*breaker{}}
}

// Ticket is one admitted call; Done reports its result. The zero of *Ticket (nil, a call
// with the breaker off) accepts Done and does nothing.
type Ticket struct {
	s      *Set
	server string
	b      *breaker
	gen    uint64
	probe  bool
	caller string
	st     Settings
	done   bool // guarded by s.mu
}

// Admit lets a call to server through, or refuses it with an *OpenError. An open breaker
// whose cool-down has passed turns half-open here, and admits at most st.Probes probes at
// once; the rest are refused until a probe ends.
//
// caller names who makes the call (a tenant and principal), for CallerFailure.
func (s *Set) Admit(server, caller string, st Settings) (*Ticket, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.opts.Now()
	b := s.breakers[server]
	if st.Failures <= 0 {
		// Off: a breaker turned off while open forgets it was.
		if b != nil && b.state != Closed {
			s.transition(server, b, Closed, now, Transition{Reason: "breaker closed: turned off"})
		}
		return nil, nil
	}
	if b == nil {
		b = &breaker{}
		s.breakers[server] = b
	}
	switch b.state {
	case Open:
		if now.Before(b.retryAt) {
			return nil, &OpenError{Server: server, State: Open, RetryAt: b.retryAt}
		}
		s.transition(server, b, HalfOpen, now, Transition{Probes: max(st.Probes, 1), Reason: fmt.Sprintf("breaker half-open: admitting %d probe(s)", max(st.Probes, 1))})
		fallthrough
	case HalfOpen:
		if b.probes >= max(st.Probes, 1) {
			return nil, &OpenError{Server: server, State: HalfOpen, RetryAt: now.Add(probeRetry)}
		}
		b.probes++
		return &Ticket{s: s, server: server, b: b, gen: b.gen, probe: true, caller: caller, st: st}, nil
	}
	return &Ticket{s: s, server: server, b: b, gen: b.gen, caller: caller, st: st}, nil
}

// Done reports the call's result. Calling it more than once counts once.
func (t *Ticket) Done(r Result) {
	if t == nil {
		return
	}
	s, b := t.s, t.b
	s.mu.Lock()
	defer s.mu.Unlock()
	if t.done || t.gen != b.gen {
		return // reported already, or the breaker has moved on since the call was admitted
	}
	t.done = true
	now := s.opts.Now()
	switch {
	case t.probe:
		b.probes--
		switch r {
		case Success:
			s.transition(t.server, b, Closed, now, Transition{Reason: "breaker closed: a probe succeeded"})
		case Failure:
			s.open(t.server, b, now, t.st, 0, "breaker open again: a probe failed")
		}
	case r == Success:
		b.failures = 0
	case r == Failure || r == CallerFailure:
		if b.failures == 0 || now.Sub(b.first) > t.st.Window {
			b.failures, b.first, b.hard, b.caller, b.callers = 0, now, false, "", false
		}
		b.failures++
		switch {
		case r == Failure:
			b.hard = true
		case b.caller == "":
			b.caller = t.caller
		case b.caller != t.caller:
			b.callers = true
		}
		if b.failures >= t.st.Failures && (b.hard || b.callers) {
			s.open(t.server, b, now, t.st, b.failures, fmt.Sprintf("breaker open after %d failures", b.failures))
		}
	}
}

func (s *Set) open(server string, b *breaker, now time.Time, st Settings, failures int, reason string) {
	b.retryAt = now.Add(st.Cooldown)
	s.transition(server, b, Open, now, Transition{Failures: failures, RetryAt: b.retryAt, Reason: reason})
}

// transition moves b to state to and reports it; tr carries the details of the report.
func (s *Set) transition(server string, b *breaker, to State, now time.Time, tr Transition) {
	tr.Server, tr.From, tr.To, tr.Time = server, b.state, to, now
	b.state = to
	b.gen++
	b.failures, b.probes = 0, 0
	if s.opts.OnTransition != nil {
		s.opts.OnTransition(tr)
	}
}

// State is the server's breaker state (Closed for a server never called).
func (s *Set) State(server string) State {
	s.mu.Lock()
	defer s.mu.Unlock()
	if b := s.breakers[server]; b != nil {
		return b.state
	}
	return Closed
}
