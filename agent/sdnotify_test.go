package agent

import (
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// notifyListener is a real NOTIFY_SOCKET: a unixgram socket collecting
// datagrams, as systemd's manager does.
type notifyListener struct {
	conn *net.UnixConn
	mu   sync.Mutex
	msgs []string
}

func listenNotify(t *testing.T) (*notifyListener, string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "sdn")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	l := &notifyListener{conn: conn}
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			l.mu.Lock()
			l.msgs = append(l.msgs, strings.Split(strings.TrimSpace(string(buf[:n])), "\n")...)
			l.mu.Unlock()
		}
	}()
	t.Cleanup(func() { conn.Close() })
	return l, path
}

func (l *notifyListener) all() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.msgs...)
}

func (l *notifyListener) count(msg string) int {
	n := 0
	for _, m := range l.all() {
		if m == msg {
			n++
		}
	}
	return n
}

// TestSdNotifyOverRealSocket runs the agent with go-systemd's notifier
// against a real NOTIFY_SOCKET and WATCHDOG_USEC, as systemd sets them.
func TestSdNotifyOverRealSocket(t *testing.T) {
	l, path := listenNotify(t)
	t.Setenv("NOTIFY_SOCKET", path)
	t.Setenv("WATCHDOG_USEC", "90000") // 90 ms
	t.Setenv("WATCHDOG_PID", "")
	if d := (SystemdNotifier{}).WatchdogInterval(); d != 90*time.Millisecond {
		t.Fatalf("watchdog interval = %s", d)
	}
	h := newHarness(t)
	h.start(func(o *Options) { o.Notifier = SystemdNotifier{} })
	eventually(t, "READY=1, STATUS= and WATCHDOG=1 on the socket", func() bool {
		m := l.all()
		return slices.Contains(m, "READY=1") && l.count("WATCHDOG=1") >= 3 &&
			slices.ContainsFunc(m, func(s string) bool { return strings.HasPrefix(s, "STATUS=online · 0 active") })
	})
	// READY comes after the first STATUS (starting), never before New succeeded.
	m := l.all()
	if i := slices.Index(m, "READY=1"); i < 0 || slices.Index(m, "STOPPING=1") >= 0 {
		t.Fatalf("messages = %v", m)
	}
	h.stop()
	eventually(t, "STOPPING=1", func() bool { return l.count("STOPPING=1") == 1 })
}
