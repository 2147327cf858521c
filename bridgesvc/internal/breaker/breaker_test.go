package breaker_test

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gatehouse-mcp/gatehouse/bridgesvc/internal/breaker"
)

// clock is a settable clock for the breaker.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

var settings = breaker.Settings{Failures: 3, Window: 10 * time.Second, Cooldown: 30 * time.Second, Probes: 1}

// newSet returns a Set on a fake clock and the transitions it reported.
func newSet(t *testing.T) (*breaker.Set, *clock, func() []breaker.Transition) {
	t.Helper()
	c := &clock{now: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}
	var mu sync.Mutex
	var got []breaker.Transition
	s := breaker.New(breaker.Options{Now: c.Now, OnTransition: func(tr breaker.Transition) {
		mu.Lock()
		got = append(got, tr)
		mu.Unlock()
	}})
	return s, c, func() []breaker.Transition {
		mu.Lock()
		defer mu.Unlock()
		return append([]breaker.Transition(nil), got...)
	}
}

// call admits one call with st and reports r; it returns the refusal, if any.
func call(t *testing.T, s *breaker.Set, st breaker.Settings, r breaker.Result) error {
	t.Helper()
	tk, err := s.Admit("srv", "t\x00p", st)
	if err != nil {
		return err
	}
	tk.Done(r)
	return nil
}

func mustOpenError(t *testing.T, err error, state breaker.State, retryAt time.Time) {
	t.Helper()
	var oe *breaker.OpenError
	if !errors.As(err, &oe) || oe.Server != "srv" || oe.State != state || !oe.RetryAt.Equal(retryAt) {
		t.Fatalf("refusal = %v, want an OpenError of srv, %v, retry at %v", err, state, retryAt)
	}
}

func TestTransitions(t *testing.T) {
	t.Parallel()
	s, c, transitions := newSet(t)
	start := c.Now()
	// Two failures, a success: the run starts over.
	for _, r := range []breaker.Result{breaker.Failure, breaker.Failure, breaker.Success, breaker.Failure, breaker.Failure} {
		if err := call(t, s, settings, r); err != nil {
			t.Fatal(err)
		}
	}
	// Neutral results do not break a run, nor count in it.
	if err := call(t, s, settings, breaker.Neutral); err != nil || s.State("srv") != breaker.Closed {
		t.Fatalf("after a neutral result: %v, %v", err, s.State("srv"))
	}
	if err := call(t, s, settings, breaker.Failure); err != nil {
		t.Fatal(err)
	}
	if got := s.State("srv"); got != breaker.Open {
		t.Fatalf("state after 3 consecutive failures = %v, want open", got)
	}
	retryAt := start.Add(settings.Cooldown)
	mustOpenError(t, call(t, s, settings, breaker.Success), breaker.Open, retryAt)
	c.Advance(settings.Cooldown - time.Nanosecond)
	mustOpenError(t, call(t, s, settings, breaker.Success), breaker.Open, retryAt)
	c.Advance(time.Nanosecond)
	// The cool-down is over: one probe, which fails: open again for a whole cool-down.
	if err := call(t, s, settings, breaker.Failure); err != nil {
		t.Fatalf("the probe was refused: %v", err)
	}
	if got := s.State("srv"); got != breaker.Open {
		t.Fatalf("state after a failed probe = %v, want open", got)
	}
	mustOpenError(t, call(t, s, settings, breaker.Success), breaker.Open, c.Now().Add(settings.Cooldown))
	c.Advance(settings.Cooldown)
	// A neutral probe frees its slot; the next probe succeeds and closes the breaker.
	if err := call(t, s, settings, breaker.Neutral); err != nil || s.State("srv") != breaker.HalfOpen {
		t.Fatalf("neutral probe: %v, state %v", err, s.State("srv"))
	}
	if err := call(t, s, settings, breaker.Success); err != nil || s.State("srv") != breaker.Closed {
		t.Fatalf("successful probe: %v, state %v", err, s.State("srv"))
	}
	want := []struct {
		from, to breaker.State
		reason   string
	}{
		{breaker.Closed, breaker.Open, "breaker open after 3 failures"},
		{breaker.Open, breaker.HalfOpen, "breaker half-open: admitting 1 probe(s)"},
		{breaker.HalfOpen, breaker.Open, "breaker open again: a probe failed"},
		{breaker.Open, breaker.HalfOpen, "breaker half-open: admitting 1 probe(s)"},
		{breaker.HalfOpen, breaker.Closed, "breaker closed: a probe succeeded"},
	}
	got := transitions()
	if len(got) != len(want) {
		t.Fatalf("transitions = %+v, want %d", got, len(want))
	}
	for i, w := range want {
		if got[i].Server != "srv" || got[i].From != w.from || got[i].To != w.to || got[i].Reason != w.reason {
			t.Errorf("transition %d = %+v, want %v → %v, %q", i, got[i], w.from, w.to, w.reason)
		}
	}
	if got[0].Failures != 3 || !got[0].RetryAt.Equal(retryAt) {
		t.Errorf("the opening transition = %+v, want 3 failures and retry at %v", got[0], retryAt)
	}
}

// TestWindow: failures further apart than the window never open the breaker.
func TestWindow(t *testing.T) {
	t.Parallel()
	s, c, _ := newSet(t)
	for range 10 {
		if err := call(t, s, settings, breaker.Failure); err != nil {
			t.Fatal(err)
		}
		c.Advance(settings.Window/2 + time.Millisecond)
	}
	// Each run holds at most two failures: the third comes past the window of the first.
	if got := s.State("srv"); got != breaker.Closed {
		t.Fatalf("state = %v, want closed", got)
	}
	// Three within the window do.
	for range 3 {
		_ = call(t, s, settings, breaker.Failure)
	}
	if got := s.State("srv"); got != breaker.Open {
		t.Fatalf("state = %v, want open", got)
	}
}

// TestStaleTicket: calls let through while closed that end after the breaker opened report
// nothing: a success does not close it, failures do not extend it.
func TestStaleTicket(t *testing.T) {
	t.Parallel()
	s, c, transitions := newSet(t)
	var late []*breaker.Ticket
	for range 5 {
		tk, err := s.Admit("srv", "t\x00p", settings)
		if err != nil {
			t.Fatal(err)
		}
		late = append(late, tk)
	}
	for range 3 {
		_ = call(t, s, settings, breaker.Failure)
	}
	late[0].Done(breaker.Success)
	late[1].Done(breaker.Failure)
	if got := s.State("srv"); got != breaker.Open {
		t.Fatalf("state = %v, want open", got)
	}
	c.Advance(settings.Cooldown)
	tk, err := s.Admit("srv", "t\x00p", settings)
	if err != nil {
		t.Fatal(err)
	}
	late[2].Done(breaker.Success)
	if got := s.State("srv"); got != breaker.HalfOpen {
		t.Fatalf("state after a stale success = %v, want half-open", got)
	}
	tk.Done(breaker.Success)
	tk.Done(breaker.Failure) // a second report counts for nothing
	if got, n := s.State("srv"), len(transitions()); got != breaker.Closed || n != 3 {
		t.Fatalf("state %v after %d transitions, want closed after 3", got, n)
	}
}

// TestOff: failures 0 never refuses, and turning a breaker off closes it.
func TestOff(t *testing.T) {
	t.Parallel()
	s, _, transitions := newSet(t)
	for range 3 {
		_ = call(t, s, settings, breaker.Failure)
	}
	off := settings
	off.Failures = 0
	for range 10 {
		if err := call(t, s, off, breaker.Failure); err != nil {
			t.Fatalf("an off breaker refused: %v", err)
		}
	}
	tr := transitions()
	if s.State("srv") != breaker.Closed || len(tr) != 2 || tr[1].Reason != "breaker closed: turned off" {
		t.Fatalf("state %v, transitions %+v", s.State("srv"), tr)
	}
}

// TestProbeAdmission: many calls at once on a half-open breaker; exactly Probes of them are
// let through, the others refused, however the goroutines interleave.
func TestProbeAdmission(t *testing.T) {
	t.Parallel()
	for _, probes := range []int{1, 3} {
		s, c, _ := newSet(t)
		st := settings
		st.Probes = probes
		for range st.Failures {
			_ = call(t, s, st, breaker.Failure)
		}
		c.Advance(st.Cooldown)
		const callers = 64
		var admitted, refused atomic.Int32
		var tickets sync.Map
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i := range callers {
			wg.Go(func() {
				<-start
				tk, err := s.Admit("srv", "t\x00p", st)
				if err != nil {
					var oe *breaker.OpenError
					if !errors.As(err, &oe) || oe.State != breaker.HalfOpen {
						t.Errorf("refusal %v, want an OpenError of a half-open breaker", err)
					}
					refused.Add(1)
					return
				}
				admitted.Add(1)
				tickets.Store(i, tk)
			})
		}
		close(start)
		wg.Wait()
		if admitted.Load() != int32(probes) || refused.Load() != callers-int32(probes) {
			t.Fatalf("probes %d: %d admitted, %d refused", probes, admitted.Load(), refused.Load())
		}
		// A probe that ends neutral frees one slot, exactly.
		tickets.Range(func(_, v any) bool { v.(*breaker.Ticket).Done(breaker.Neutral); return false })
		if _, err := s.Admit("srv", "t\x00p", st); err != nil {
			t.Fatalf("probes %d: no slot after a neutral probe: %v", probes, err)
		}
		if _, err := s.Admit("srv", "t\x00p", st); err == nil {
			t.Fatalf("probes %d: two slots after one neutral probe", probes)
		}
	}
}

// TestCallerFailures: failures one caller can cause itself (timeouts, its child exiting) open
// the breaker only when two callers or more had them; a probe that ends so decides nothing.
func TestCallerFailures(t *testing.T) {
	t.Parallel()
	s, c, _ := newSet(t)
	by := func(caller string, r breaker.Result) error {
		tk, err := s.Admit("srv", caller, settings)
		if err != nil {
			return err
		}
		tk.Done(r)
		return nil
	}
	for range 10 {
		if err := by("t\x00mallory", breaker.CallerFailure); err != nil {
			t.Fatalf("one caller's own failures opened the breaker: %v", err)
		}
	}
	if got := s.State("srv"); got != breaker.Closed {
		t.Fatalf("state %v after one caller's failures, want closed", got)
	}
	c.Advance(time.Minute) // a new run
	_ = by("t\x00mallory", breaker.CallerFailure)
	_ = by("t\x00mallory", breaker.CallerFailure)
	_ = by("t\x00alice", breaker.CallerFailure)
	if got := s.State("srv"); got != breaker.Open {
		t.Fatalf("state %v after failures of two callers, want open", got)
	}
	c.Advance(settings.Cooldown)
	tk, err := s.Admit("srv", "t\x00mallory", settings)
	if err != nil {
		t.Fatal(err)
	}
	tk.Done(breaker.CallerFailure) // a slow probe: frees the slot, decides nothing
	if got := s.State("srv"); got != breaker.HalfOpen {
		t.Fatalf("state %v after a probe's caller failure, want half-open", got)
	}
	if err := by("t\x00alice", breaker.Success); err != nil || s.State("srv") != breaker.Closed {
		t.Fatalf("the next probe's success: %v, state %v", err, s.State("srv"))
	}
}
