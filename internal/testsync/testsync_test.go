package testsync_test

import (
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gatehouse-mcp/gatehouse/internal/testsync"
)

func TestBuffer(t *testing.T) {
	t.Parallel()
	var b testsync.Buffer
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 100 {
				_, _ = b.Write([]byte("ab"))
				_ = b.String()
			}
		})
	}
	wg.Wait()
	if b.Len() != 8*100*2 || len(b.String()) != b.Len() {
		t.Fatalf("Len %d, String of %d bytes, want %d", b.Len(), len(b.String()), 8*100*2)
	}
}

func TestWaitFor(t *testing.T) {
	t.Parallel()
	t.Run("condition met", func(t *testing.T) {
		t.Parallel()
		var n atomic.Int32
		go func() {
			for range 3 {
				n.Add(1)
			}
		}()
		testsync.WaitFor(t, 10*time.Second, "three increments", func() bool { return n.Load() == 3 })
	})
	t.Run("deadline", func(t *testing.T) {
		t.Parallel()
		rec := &recorder{TB: t}
		done := make(chan struct{})
		go func() {
			defer close(done)
			testsync.WaitFor(rec, 20*time.Millisecond, "nothing", func() bool { return false })
		}()
		<-done
		if !rec.failed.Load() {
			t.Fatal("WaitFor returned without failing past its deadline")
		}
	})
}

// recorder notes a Fatalf and ends the goroutine, as testing.T does, without failing t.
type recorder struct {
	testing.TB
	failed atomic.Bool
}

func (r *recorder) Helper() {}

func (r *recorder) Fatalf(string, ...any) {
	r.failed.Store(true)
	runtime.Goexit()
}
