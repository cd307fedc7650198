package testutil

import (
	"net"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
)

// NotifySocket is a real NOTIFY_SOCKET, as systemd's manager gives a
// Type=notify service: a unixgram socket collecting the lines of every
// datagram sent to Path.
type NotifySocket struct {
	Path string
	mu   sync.Mutex
	msgs []string
}

// ListenNotify opens a NotifySocket (in a ShortDir), closed at the end of
// the test.
func ListenNotify(t testing.TB) *NotifySocket {
	t.Helper()
	n := &NotifySocket{Path: filepath.Join(ShortDir(t), "notify")}
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: n.Path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	go func() {
		buf := make([]byte, 4096)
		for {
			k, err := conn.Read(buf)
			if err != nil {
				return
			}
			n.mu.Lock()
			n.msgs = append(n.msgs, strings.Split(strings.TrimSpace(string(buf[:k])), "\n")...)
			n.mu.Unlock()
		}
	}()
	return n
}

// All is every line received so far, in order.
func (n *NotifySocket) All() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.msgs)
}

// Count is how many lines received so far are msg.
func (n *NotifySocket) Count(msg string) int {
	c := 0
	for _, m := range n.All() {
		if m == msg {
			c++
		}
	}
	return c
}

// Has reports whether a line received so far satisfies pred.
func (n *NotifySocket) Has(pred func(string) bool) bool {
	return slices.ContainsFunc(n.All(), pred)
}
