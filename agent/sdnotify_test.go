package agent

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/decent-stuff/dc-agent/internal/testutil"
)

// TestSdNotifyOverRealSocket runs the agent with go-systemd's notifier
// against a real NOTIFY_SOCKET and WATCHDOG_USEC, as systemd sets them.
func TestSdNotifyOverRealSocket(t *testing.T) {
	l := testutil.ListenNotify(t)
	t.Setenv("NOTIFY_SOCKET", l.Path)
	t.Setenv("WATCHDOG_USEC", "90000") // 90 ms
	t.Setenv("WATCHDOG_PID", "")
	if d := (SystemdNotifier{}).WatchdogInterval(); d != 90*time.Millisecond {
		t.Fatalf("watchdog interval = %s", d)
	}
	h := newHarness(t)
	h.start(func(o *Options) { o.Notifier = SystemdNotifier{} })
	eventually(t, "READY=1, STATUS= and WATCHDOG=1 on the socket", func() bool {
		m := l.All()
		return slices.Contains(m, "READY=1") && l.Count("WATCHDOG=1") >= 3 &&
			slices.ContainsFunc(m, func(s string) bool { return strings.HasPrefix(s, "STATUS=online · 0 active") })
	})
	// READY comes after the first STATUS (starting), never before New succeeded.
	m := l.All()
	if i := slices.Index(m, "READY=1"); i < 0 || slices.Index(m, "STOPPING=1") >= 0 {
		t.Fatalf("messages = %v", m)
	}
	h.stop()
	eventually(t, "STOPPING=1", func() bool { return l.Count("STOPPING=1") == 1 })
}
