package agent

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/decent-stuff/dc-agent/dcapi"
	"github.com/decent-stuff/dc-agent/provisioners"
)

func TestBackoffGrowsCapsAndResets(t *testing.T) {
	r := 0.999
	b := &Backoff{Base: time.Second, Max: 60 * time.Second, Rand: func() float64 { return r }}
	var got []time.Duration
	for i := 0; i < 9; i++ {
		got = append(got, b.Next(0).Round(time.Second))
	}
	want := []time.Duration{1, 2, 4, 8, 16, 32, 60, 60, 60}
	for i := range want {
		if got[i] != want[i]*time.Second {
			t.Fatalf("waits = %v, want %v s", got, want)
		}
	}
	// Jitter: the lowest draw waits half.
	r = 0
	if d := b.Next(0); d != 30*time.Second {
		t.Fatalf("min jitter at cap = %s", d)
	}
	b.Reset()
	if d := b.Next(0); d != 500*time.Millisecond {
		t.Fatalf("after reset = %s", d)
	}
	// Retry-After raises the wait but never above the cap.
	if d := b.Next(10 * time.Second); d != 10*time.Second {
		t.Fatalf("retry-after 10s = %s", d)
	}
	if d := b.Next(time.Hour); d != 60*time.Second {
		t.Fatalf("retry-after 1h = %s", d)
	}
}

func TestTimingScaled(t *testing.T) {
	tm := Timing{PollInterval: 30 * time.Second, BackoffMax: 60 * time.Second, LongPollWait: 30 * time.Second, HealthCheckTime: time.Minute,
		ShutdownGrace: 20 * time.Second, Backend: provisioners.DefaultTimeouts}
	s := tm.Scaled(0.01)
	if s.PollInterval != 300*time.Millisecond || s.BackoffMax != 600*time.Millisecond {
		t.Fatalf("scaled = %+v", s)
	}
	if s.LongPollWait != time.Second {
		t.Fatalf("long-poll wait %s: must stay a whole second", s.LongPollWait)
	}
	if s.HealthCheckTime != time.Minute || s.ShutdownGrace != 20*time.Second {
		t.Fatal("timeouts of backend calls and the shutdown grace must not shrink")
	}
	if s.Backend.Task != 1800*time.Millisecond || s.Backend.RetryWait != 20*time.Millisecond {
		t.Fatalf("backend waits scaled to %+v", s.Backend)
	}
}

func TestLimiter(t *testing.T) {
	l := newLimiter(2)
	ctx := context.Background()
	l.Acquire(ctx)
	l.Acquire(ctx)
	got := make(chan struct{})
	go func() { l.Acquire(ctx); close(got) }()
	select {
	case <-got:
		t.Fatal("third acquire did not wait")
	case <-time.After(20 * time.Millisecond):
	}
	l.SetLimit(3)
	<-got
	if l.InUse() != 3 {
		t.Fatalf("in use %d", l.InUse())
	}
	cctx, cancel := context.WithCancel(ctx)
	errc := make(chan error)
	go func() { errc <- l.Acquire(cctx) }()
	time.Sleep(10 * time.Millisecond)
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled acquire: %v", err)
	}
	l.Release()
	l.Release()
	l.Release()
	if l.InUse() != 0 {
		t.Fatalf("in use %d after releases", l.InUse())
	}
	// Concurrency stays within the limit under contention.
	l.SetLimit(3)
	var mu sync.Mutex
	cur, peak := 0, 0
	var wg sync.WaitGroup
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l.Acquire(ctx)
			mu.Lock()
			cur++
			peak = max(peak, cur)
			mu.Unlock()
			time.Sleep(time.Millisecond)
			mu.Lock()
			cur--
			mu.Unlock()
			l.Release()
		}()
	}
	wg.Wait()
	if peak != 3 {
		t.Fatalf("peak %d, want 3", peak)
	}
}

func TestStoreJournalOutboxDurability(t *testing.T) {
	dir := t.TempDir()
	s, err := OpenStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	cid := strings.Repeat("ab", 32)
	if err := s.PutJournal(JournalEntry{ContractID: cid, Step: jLocked}); err != nil {
		t.Fatal(err)
	}
	if err := s.PutJournal(JournalEntry{ContractID: "../../etc/passwd"}); err == nil {
		t.Fatal("a path-like contract id was accepted")
	}
	u := dcapi.FailedUpdate("x", true)
	r1, err := s.AddReport(Report{Kind: ReportProvisioning, ContractID: cid, Update: &u})
	if err != nil {
		t.Fatal(err)
	}
	r2, _ := s.AddReport(Report{Kind: ReportTerminated, ContractID: cid})
	if _, err := s.AddReport(Report{Kind: "bogus"}); err == nil {
		t.Fatal("unknown report kind accepted")
	}
	if r2.Seq != r1.Seq+1 {
		t.Fatalf("seq %d then %d", r1.Seq, r2.Seq)
	}
	// A second store on the same directory is refused while the first lives.
	if _, err := OpenStore(dir); err == nil || !strings.Contains(err.Error(), "another dc-agent") {
		t.Fatalf("second open: %v", err)
	}
	s.Close()
	// A corrupt file is moved aside, not fatal, not silently used.
	os.WriteFile(filepath.Join(dir, outboxDir, reportName(99)), []byte("{not json"), 0o600)
	os.WriteFile(filepath.Join(dir, journalDir, strings.Repeat("cd", 32)+".json"), []byte("garbage"), 0o600)
	s2, err := OpenStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	reps := s2.Reports()
	if len(reps) != 2 || reps[0].Seq != r1.Seq || reps[1].Kind != ReportTerminated {
		t.Fatalf("reports after reopen = %+v", reps)
	}
	r3, _ := s2.AddReport(Report{Kind: ReportTerminated, ContractID: cid})
	if r3.Seq <= r2.Seq {
		t.Fatalf("sequence went backwards: %d after %d", r3.Seq, r2.Seq)
	}
	entries, bad, err := s2.Journal()
	if err != nil || len(entries) != 1 || len(bad) != 1 {
		t.Fatalf("journal = %+v bad=%v err=%v", entries, bad, err)
	}
	if _, err := os.Stat(filepath.Join(dir, outboxDir, reportName(99)+".corrupt")); err != nil {
		t.Fatalf("corrupt outbox file not quarantined: %v", err)
	}
	if err := s2.DeleteReport(r1.Seq); err != nil {
		t.Fatal(err)
	}
	if err := s2.DeleteJournal(cid); err != nil {
		t.Fatal(err)
	}
	for _, sub := range []string{outboxDir, journalDir} {
		des, _ := os.ReadDir(filepath.Join(dir, sub))
		for _, de := range des {
			if info, _ := de.Info(); info.Mode().Perm() != 0o600 && !strings.HasSuffix(de.Name(), ".corrupt") {
				t.Errorf("%s/%s has mode %v, want 0600", sub, de.Name(), info.Mode().Perm())
			}
		}
	}
}

func TestStatusLine(t *testing.T) {
	now := time.Now()
	cases := []struct {
		got, want string
	}{
		{statusLine("running", true, "", 3, 0, 1, 0, now.Add(-2*time.Second), now, ""), "online · 3 active · 1 provisioning · last poll 2 s ago"},
		{statusLine("running", false, "API unreachable, retrying", 3, 2, 0, 4, now.Add(-90*time.Second), now, ""), "offline (API unreachable, retrying) · 3 active · 2 queued · 4 reports pending · last poll 1 min ago"},
		{statusLine("running", true, "", 0, 0, 0, 0, time.Time{}, now, "delegation revoked — fix it"), "STOPPED: delegation revoked — fix it · 0 active · 0 provisioning · not polled yet"},
		{statusLine("stopping", true, "", 1, 0, 0, 0, now, now, ""), "stopping · 1 active · 0 provisioning · last poll just now"},
	}
	for _, c := range cases {
		if c.got != c.want {
			t.Errorf("got  %q\nwant %q", c.got, c.want)
		}
	}
}

func TestParseCrashAt(t *testing.T) {
	if f, err := ParseCrashAt(""); err != nil || f != nil {
		t.Fatal("empty spec must mean no hook")
	}
	for _, bad := range []string{"nowhere", "locked:0", "locked:x"} {
		if _, err := ParseCrashAt(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if _, err := ParseCrashAt(CrashReportSent + ":3"); err != nil {
		t.Fatal(err)
	}
}

func TestLivenessDeadlines(t *testing.T) {
	now := time.Now()
	l := newLiveness(func() time.Time { return now }, time.Second)
	l.expect("a", time.Minute)
	l.expect("b", 0)
	if s := l.stuck(); len(s) != 0 {
		t.Fatalf("stuck too early: %v", s)
	}
	now = now.Add(2 * time.Second)
	if s := l.stuck(); len(s) != 1 || !strings.HasPrefix(s[0], "b ") {
		t.Fatalf("stuck = %v", s)
	}
	l.idle("b")
	if s := l.stuck(); len(s) != 0 {
		t.Fatalf("idle loop counted as stuck: %v", s)
	}
}

// FuzzStoreFiles: whatever a crash or a disk fault leaves in the state
// directory never panics the loader and never yields an invalid entry.
func FuzzStoreFiles(f *testing.F) {
	cid := strings.Repeat("ab", 32)
	f.Add([]byte(`{"seq":1,"kind":"provisioning_update","contractId":"`+cid+`","update":{"status":"provisioned","instanceDetails":"{}"}}`), []byte(`{"contractId":"`+cid+`","step":"locked"}`))
	f.Add([]byte(`{"seq":1,"kind":"health","checks":[{"contractId":"`+cid+`","checkedAt":1,"status":"healthy"}]}`), []byte(`{}`))
	f.Add([]byte(`{"seq":1,"kind":"terminated","contractId":"../x"}`), []byte(`{"contractId":"../../etc"}`))
	f.Fuzz(func(t *testing.T, outbox, journal []byte) {
		if r, err := parseReport(reportName(1), outbox); err == nil {
			if r.Seq != 1 || r.validate() != nil {
				t.Fatalf("accepted report %+v", r)
			}
			if r.Kind == ReportProvisioning && (r.Update == nil || validContractID(r.ContractID) != nil) {
				t.Fatalf("accepted provisioning report without update or id: %+v", r)
			}
		}
		if e, err := parseJournalEntry(cid+".json", journal); err == nil && e.ContractID != cid {
			t.Fatalf("journal entry for %q accepted from %s.json", e.ContractID, cid)
		}
	})
}

func TestHangClock(t *testing.T) {
	c := &HangClock{Clock: RealClock{}}
	select {
	case <-c.After(time.Millisecond):
	case <-time.After(10 * time.Second):
		t.Fatal("a wait before the hang did not end")
	}
	c.Hang()
	if ch := c.After(time.Nanosecond); ch != nil {
		t.Fatal("a wait after the hang can end by itself")
	}
}
