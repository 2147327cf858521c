package auditsvc_test

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gatehouse-mcp/gatehouse/auditsvc"
	auditv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/audit/v1"
	"github.com/gatehouse-mcp/gatehouse/internal/etcdtest"
	"github.com/gatehouse-mcp/gatehouse/internal/testsync"
	"github.com/prometheus/client_golang/prometheus"
)

var etcd *etcdtest.Etcd

func TestMain(m *testing.M) { os.Exit(etcdtest.Main(m, &etcd)) }

// signed opens a log in a new directory with a signing key kept outside it, anchored in the
// shared etcd under a key of the test's own, checkpointing every `every` records.
type signed struct {
	dir    string
	key    string // the key file
	pub    ed25519.PublicKey
	anchor *auditsvc.EtcdAnchor
	cfg    auditsvc.Config
}

func newSigned(t *testing.T, every int, segmentBytes int64) *signed {
	t.Helper()
	root := t.TempDir()
	s := &signed{dir: filepath.Join(root, "audit"), key: filepath.Join(root, "keys", "audit.pem")}
	k, err := auditsvc.EnsureSigningKey(s.key)
	if err != nil {
		t.Fatal(err)
	}
	s.pub = k.Public().(ed25519.PublicKey)
	s.anchor = auditsvc.NewEtcdAnchor(etcd.Client, etcdtest.Prefix(t)+"anchor")
	s.cfg = auditsvc.Config{Dir: s.dir, SigningKeyFile: s.key, CheckpointRecords: every, SegmentBytes: segmentBytes}
	return s
}

func (s *signed) open(t *testing.T, logs *testsync.Buffer) *auditsvc.Service {
	t.Helper()
	var h slog.Handler = slog.DiscardHandler
	if logs != nil {
		h = slog.NewJSONHandler(logs, nil)
	}
	svc, err := auditsvc.New(s.cfg, slog.New(h), auditsvc.WithAnchor(s.anchor))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Close(context.Background()) })
	return svc
}

func (s *signed) verify(t *testing.T) *auditv1.VerifyResponse {
	t.Helper()
	resp, err := auditsvc.VerifyDir(context.Background(), s.dir, auditsvc.VerifyOptions{PublicKey: s.pub, Anchor: s.anchor})
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// fill appends n records from concurrent callers.
func fill(t *testing.T, svc *auditsvc.Service, n int) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			if _, err := appendRecord(svc, record(i)); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// TestSegmentsRotateAndVerify: past SegmentBytes the log starts a new segment, chained to the
// last; the whole verifies, every checkpoint matches, and the anchor is the last head.
func TestSegmentsRotateAndVerify(t *testing.T) {
	t.Parallel()
	s := newSigned(t, 50, 64<<10)
	// The log rotates between batches, so a segment holds at most 64 KiB plus one batch: with
	// batches of 16 records of about 700 bytes, 400 records need at least four segments
	// however the concurrent appends are batched.
	s.cfg.MaxBatch = 16
	svc := s.open(t, nil)
	fill(t, svc, 400)
	if err := svc.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	resp := s.verify(t)
	if len(resp.GetProblems()) != 0 {
		t.Fatalf("problems: %v", resp.GetProblems())
	}
	if resp.GetRecords() != 400 || len(resp.GetSegments()) < 3 || svc.Stats().Rotations != uint64(len(resp.GetSegments())-1) {
		t.Fatalf("%d records in %d segments (%d rotations); want 400 in several", resp.GetRecords(), len(resp.GetSegments()), svc.Stats().Rotations)
	}
	if resp.GetCheckpoints() < 1 || resp.GetAnchor().GetSequence() != 400 || resp.GetLastCheckpoint().GetSequence() != 400 {
		t.Fatalf("%d checkpoints, the last at %d, anchor at %d; want the last and the anchor at 400",
			resp.GetCheckpoints(), resp.GetLastCheckpoint().GetSequence(), resp.GetAnchor().GetSequence())
	}
	// And it reopens where it stopped.
	svc = s.open(t, nil)
	if r, err := appendRecord(svc, record(0)); err != nil || r.GetSequence() != 401 {
		t.Fatalf("append after reopening = %v, %v; want sequence 401", r, err)
	}
}

// TestTamperEvidence: what the chain alone cannot show, the checkpoints and the anchor do.
func TestTamperEvidence(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		tamper func(t *testing.T, s *signed)
		want   []string // problem kinds, in order
		seq    uint64   // the first problem's sequence
	}{
		{"a byte changed", func(t *testing.T, s *signed) {
			editLines(t, s.dir, auditsvc.FileName, func(l []string) []string {
				l[6] = strings.Replace(l[6], `"principal":"alice"`, `"principal":"alicf"`, 1)
				return l
			})
		}, []string{auditsvc.KindBroken}, 7},
		{"a record changed and the chain recomputed", func(t *testing.T, s *signed) {
			editLines(t, s.dir, auditsvc.FileName, func(l []string) []string {
				l[6] = strings.Replace(l[6], `"principal":"alice"`, `"principal":"mallory"`, 1)
				return rechain(l, 6)
			})
		}, nil, 0},
		{"the last records cut off", func(t *testing.T, s *signed) {
			editLines(t, s.dir, auditsvc.FileName, func(l []string) []string { return l[:5] })
		}, []string{auditsvc.KindCutOff}, 0},
		{"checkpoints forged with another key", func(t *testing.T, s *signed) {
			other := newSigned(t, 10, 0)
			s.key = other.key
			s.cfg.SigningKeyFile = other.key
			os.Remove(filepath.Join(s.dir, auditsvc.CheckpointsFileName))
			svc := s.open(t, nil) // signs the head with the other key
			if err := svc.Close(context.Background()); err != nil {
				t.Fatal(err)
			}
		}, []string{auditsvc.KindBadSignature, auditsvc.KindBadSignature}, 30},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := newSigned(t, 10, 0)
			svc := s.open(t, nil)
			for i := range 30 {
				if _, err := appendRecord(svc, record(i)); err != nil {
					t.Fatal(err)
				}
			}
			if err := svc.Close(context.Background()); err != nil {
				t.Fatal(err)
			}
			if ps := s.verify(t).GetProblems(); len(ps) != 0 {
				t.Fatalf("problems before tampering: %v", ps)
			}
			tt.tamper(t, s)
			ps := s.verify(t).GetProblems()
			var kinds []string
			for _, p := range ps {
				kinds = append(kinds, p.GetKind())
			}
			if tt.seq == 0 && tt.want != nil {
				// Every checkpoint is past the cut (which ones there are varies), then the
				// anchor.
				if len(ps) < 2 || ps[0].GetSequence() <= 5 || !strings.Contains(ps[len(ps)-1].GetReason(), "anchored") {
					t.Fatalf("problems %v; want every checkpoint and the anchor past the cut", ps)
				}
				for _, k := range kinds {
					if k != auditsvc.KindCutOff {
						t.Fatalf("problems %v; want cut_off only", ps)
					}
				}
				return
			}
			if tt.want == nil {
				// Checkpoints are signed off the append path, so which sequences they sign
				// varies: every one from the changed record on mismatches, then the anchor.
				want := make([]string, len(ps))
				for i := range want {
					want[i] = auditsvc.KindCheckpointMismatch
				}
				want[len(want)-1] = auditsvc.KindAnchorMismatch
				if len(ps) < 2 || fmt.Sprint(kinds) != fmt.Sprint(want) || ps[0].GetSequence() < 7 || !strings.Contains(ps[0].GetReason(), "was changed and the chain recomputed") {
					t.Fatalf("problems %v; want checkpoint mismatches from sequence 7 on, then the anchor's", ps)
				}
				return
			}
			if fmt.Sprint(kinds) != fmt.Sprint(tt.want) || ps[0].GetSequence() != tt.seq {
				t.Fatalf("problems %v; want kinds %v, the first at sequence %d", ps, tt.want, tt.seq)
			}
		})
	}
}

// TestCutOffFoundAtStart: records cut off the end while the gateway was down are found at the
// next start (the anchor is ahead of the log): it starts anyway, raises the alert and records
// the break, and verify keeps reporting the cut.
func TestCutOffFoundAtStart(t *testing.T) {
	t.Parallel()
	s := newSigned(t, 10, 0)
	svc := s.open(t, nil)
	fill(t, svc, 20)
	if err := svc.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	editLines(t, s.dir, auditsvc.FileName, func(l []string) []string { return l[:15] })
	var logs testsync.Buffer
	reg := prometheus.NewRegistry()
	svc, err := auditsvc.New(s.cfg, slog.New(slog.NewJSONHandler(&logs, nil)), auditsvc.WithAnchor(s.anchor), auditsvc.WithMetrics(reg))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Close(context.Background()) })
	if st := svc.Stats(); st.Breaks != 1 {
		t.Fatalf("Stats.Breaks = %d, want 1", st.Breaks)
	}
	// The break is on /metrics, for the GatehouseAuditDamaged alert.
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	breaks := -1.0
	for _, f := range families {
		if f.GetName() == "gatehouse_audit_breaks_total" && len(f.GetMetric()) == 1 {
			breaks = f.GetMetric()[0].GetCounter().GetValue()
		}
	}
	if breaks != 1 {
		t.Fatalf("gatehouse_audit_breaks_total = %v, want 1", breaks)
	}
	if !strings.Contains(logs.String(), `"msg":"audit log does not match its anchor"`) || !strings.Contains(logs.String(), "cut off") {
		t.Fatalf("no ERROR about the anchor; logs:\n%s", logs.String())
	}
	if r, err := appendRecord(svc, record(0)); err != nil || r.GetSequence() != 17 {
		t.Fatalf("append = %v, %v; want sequence 17 (after the break record)", r, err)
	}
	if err := svc.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, p := range s.verify(t).GetProblems() {
		kinds = append(kinds, p.GetKind())
	}
	// Which checkpoints lie past the cut varies (they are signed off the append path).
	if len(kinds) < 2 || kinds[0] != auditsvc.KindRecoveredBreak || strings.Trim(strings.Repeat(auditsvc.KindCutOff+" ", len(kinds)-1), " ") != strings.Join(kinds[1:], " ") {
		t.Fatalf("problems %v; want the recorded break and the checkpoints past the cut", kinds)
	}
}

// TestSigningKeyInsideLogRefused: a key beside the log defends nothing.
func TestSigningKeyInsideLogRefused(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	key := filepath.Join(dir, "k.pem")
	if _, err := auditsvc.EnsureSigningKey(key); err != nil {
		t.Fatal(err)
	}
	if svc, err := auditsvc.New(auditsvc.Config{Dir: dir, SigningKeyFile: key}, nil); err == nil {
		_ = svc.Close(context.Background())
		t.Fatal("New accepted a signing key inside the log's directory")
	}
}

func editLines(t *testing.T, dir, name string, f func([]string) []string) {
	t.Helper()
	path := filepath.Join(dir, name)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := f(strings.Split(strings.TrimSuffix(string(b), "\n"), "\n"))
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
}

// rechain recomputes the hash of line from and the prev and hash of every line after it, as
// someone who can write the file would.
func rechain(l []string, from int) []string {
	for i := from; i < len(l); i++ {
		if i > from {
			prev := l[i-1][strings.LastIndex(l[i-1], `"hash":"`)+len(`"hash":"`):][:64]
			j := strings.Index(l[i], `"prev":"`) + len(`"prev":"`)
			l[i] = l[i][:j] + prev + l[i][j+64:]
		}
		l[i] = rehash(l[i])
	}
	return l
}

// TestNewFailureReleasesLog: a failure in New after the log is open (here the checkpoints
// file cannot be opened) returns at once, without waiting for a writer that never started,
// and releases the segment's lock: a second New on the directory works once the cause is
// gone.
func TestNewFailureReleasesLog(t *testing.T) {
	s := newSigned(t, 10, 0)
	first := s.open(t, nil)
	fill(t, first, 3)
	if err := first.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	cp := filepath.Join(s.dir, auditsvc.CheckpointsFileName)
	if err := os.Remove(cp); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(cp, 0o700); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		svc, err := auditsvc.New(s.cfg, nil, auditsvc.WithAnchor(s.anchor))
		if err == nil {
			_ = svc.Close(context.Background())
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("New succeeded with a directory in place of the checkpoints file")
		}
	case <-time.After(time.Minute):
		t.Fatal("New did not return after failing to open the checkpoints file")
	}
	if err := os.Remove(cp); err != nil {
		t.Fatal(err)
	}
	svc := s.open(t, nil)
	fill(t, svc, 2)
}

// TestRestartAfterRotation: a log closed right after a rotation (its newest segment empty)
// reopens, closes and reopens again without damage: the head signed at open is the last
// record's segment, not the empty one.
func TestRestartAfterRotation(t *testing.T) {
	t.Parallel()
	s := newSigned(t, 50, 64<<10)
	svc := s.open(t, nil)
	for i := 0; svc.Stats().Rotations == 0; i++ {
		if _, err := appendRecord(svc, record(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := svc.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		var logs testsync.Buffer
		svc = s.open(t, &logs)
		if st := svc.Stats(); st.Breaks != 0 {
			t.Fatalf("Stats.Breaks = %d after a clean restart; logs:\n%s", st.Breaks, logs.String())
		}
		if err := svc.Close(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if p := s.verify(t).GetProblems(); len(p) != 0 {
		t.Fatalf("problems after clean restarts: %v", p)
	}
}

// TestRemovedCheckpointsShow: without the anchor (offline, or split mode without etcd),
// removing checkpoints is what would hide a record changed with its chain recomputed; with a
// trusted key and the checkpoint interval, Verify reports it.
func TestRemovedCheckpointsShow(t *testing.T) {
	t.Parallel()
	cpLines := func(t *testing.T, s *signed, keep func(i int, line string) bool) {
		editLines(t, s.dir, auditsvc.CheckpointsFileName, func(l []string) []string {
			var out []string
			for i, line := range l {
				if keep(i, line) {
					out = append(out, line)
				}
			}
			return out
		})
	}
	edit := func(t *testing.T, s *signed, i int) {
		editLines(t, s.dir, auditsvc.FileName, func(l []string) []string {
			l[i] = strings.Replace(l[i], `"principal":`, `"principal":"mallory","x":`, 1)
			return rechain(l, i)
		})
	}
	tests := []struct {
		name   string
		tamper func(t *testing.T, s *signed)
		want   string
	}{
		{"checkpoints file deleted", func(t *testing.T, s *signed) {
			edit(t, s, 6)
			if err := os.Remove(filepath.Join(s.dir, auditsvc.CheckpointsFileName)); err != nil {
				t.Fatal(err)
			}
		}, auditsvc.KindMissingCheckpoints},
		{"checkpoints file truncated", func(t *testing.T, s *signed) {
			// Only the first checkpoint is kept: it signs at most sequence 20 (the first run's
			// close signs its head), whatever the signer's pace, so at least 40 records follow
			// it unsigned. (Keeping those below a fixed sequence kept none when a slow signer's
			// first checkpoint came late.)
			edit(t, s, 39)
			cpLines(t, s, func(i int, _ string) bool { return i == 0 })
		}, auditsvc.KindUnsignedTail},
		{"a middle checkpoint removed", func(t *testing.T, s *signed) {
			cpLines(t, s, func(i int, _ string) bool { return i != 2 })
		}, auditsvc.KindMissingCheckpoints},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := newSigned(t, 10, 0)
			// Three runs: at least four checkpoints whatever the signer's pace (each open and
			// each close signs the head).
			for run := range 3 {
				svc := s.open(t, nil)
				for i := range 20 {
					if _, err := appendRecord(svc, record(20*run+i)); err != nil {
						t.Fatal(err)
					}
				}
				if err := svc.Close(context.Background()); err != nil {
					t.Fatal(err)
				}
			}
			verify := func() []*auditv1.Problem {
				resp, err := auditsvc.VerifyDir(context.Background(), s.dir, auditsvc.VerifyOptions{PublicKey: s.pub, CheckpointRecords: 10})
				if err != nil {
					t.Fatal(err)
				}
				return resp.GetProblems()
			}
			if ps := verify(); len(ps) != 0 {
				t.Fatalf("problems before tampering: %v", ps)
			}
			tt.tamper(t, s)
			ps := verify()
			if len(ps) != 1 || ps[0].GetKind() != tt.want {
				t.Fatalf("problems %v; want one %s", ps, tt.want)
			}
		})
	}
}

// TestVerifyProblemsBounded: a checkpoints file full of junk yields at most 100 problems and a
// count of the rest.
func TestVerifyProblemsBounded(t *testing.T) {
	t.Parallel()
	s := newSigned(t, 10, 0)
	svc := s.open(t, nil)
	fill(t, svc, 5)
	if err := svc.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(filepath.Join(s.dir, auditsvc.CheckpointsFileName), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(strings.Repeat("not a checkpoint\n", 250))
	f.Close()
	resp := s.verify(t)
	if len(resp.GetProblems()) != 100 || fmt.Sprint(resp.GetNotes()) != "[150 more problems were found and are not listed]" {
		t.Fatalf("%d problems, notes %q; want 100 and a count of 150 more", len(resp.GetProblems()), resp.GetNotes())
	}
}

// TestSigningKeyFiles: minting a key writes its public half beside it; a key file others can
// read, or a huge one, is refused.
func TestSigningKeyFiles(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "keys", "audit-signing.pem")
	k, err := auditsvc.EnsureSigningKey(path)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(auditsvc.PublicKeyFile(path))
	if err != nil {
		t.Fatal(err)
	}
	pub, err := auditsvc.ParsePublicKey(string(b))
	if err != nil || !pub.Equal(k.Public()) {
		t.Fatalf("public key file %q: %v; want the signing key's public half", b, err)
	}
	if err := os.Chmod(path, 0o640); err != nil {
		t.Fatal(err)
	}
	if _, err := auditsvc.LoadSigningKey(path); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("a group-readable key loaded: %v", err)
	}
	huge := filepath.Join(dir, "huge.pem")
	if err := os.WriteFile(huge, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := auditsvc.LoadSigningKey(huge); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("a 1 MiB key file: %v", err)
	}
}

// TestAnchorMovesForward: the anchor's key is under the service's prefix, and Store never
// moves it back, whatever order concurrent stores land in; Reset does.
func TestAnchorMovesForward(t *testing.T) {
	t.Parallel()
	if got := auditsvc.AnchorKey(""); got != "/gatehouse/audit/anchor" {
		t.Fatalf("default anchor key %q", got)
	}
	prefix := etcdtest.Prefix(t)
	a := auditsvc.NewEtcdAnchor(etcd.Client, auditsvc.AnchorKey(prefix))
	ctx := context.Background()
	cp := func(seq uint64) *auditv1.Checkpoint { return &auditv1.Checkpoint{Sequence: seq, Hash: fmt.Sprint(seq)} }
	var wg sync.WaitGroup
	for seq := range uint64(20) {
		wg.Go(func() {
			if err := a.Store(ctx, cp(seq+1)); err != nil && !errors.Is(err, auditsvc.ErrAnchorAhead) {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	load := func() uint64 {
		c, err := a.Load(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return c.GetSequence()
	}
	if got := load(); got != 20 {
		t.Fatalf("anchor at %d after concurrent stores of 1..20; want 20", got)
	}
	if err := a.Store(ctx, cp(5)); !errors.Is(err, auditsvc.ErrAnchorAhead) {
		t.Fatalf("storing an older checkpoint: %v; want ErrAnchorAhead", err)
	}
	if err := a.Reset(ctx, cp(5)); err != nil || load() != 5 {
		t.Fatalf("reset: %v, anchor at %d; want 5", err, load())
	}
	if r, err := etcd.Client.Get(ctx, prefix+"audit/anchor"); err != nil || len(r.Kvs) != 1 {
		t.Fatalf("the anchor is not at <prefix>audit/anchor: %v %v", r, err)
	}
}
