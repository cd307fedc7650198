package bench

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// BenchmarkWizardFirstFrame: a bare `dc-agent` launched on a terminal (a
// pty of 80x24 that answers the terminal queries a real one answers) until
// the wizard's first screen is on it. Target: < 150 ms.
func BenchmarkWizardFirstFrame(b *testing.B) {
	dir := b.TempDir()
	bin, err := goBuild(dir, "github.com/decent-stuff/dc-agent/cmd/dc-agent", "dc-agent")
	if err != nil {
		b.Fatal(err)
	}
	runs := 20
	if quick() {
		runs = 5
	}
	var times []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for r := 0; r < runs; r++ {
			times = append(times, firstFrame(b, bin, dir))
		}
	}
	sort.Slice(times, func(i, j int) bool { return times[i] < times[j] })
	p50, worst := times[len(times)/2], times[len(times)-1]
	b.ReportMetric(float64(p50.Microseconds())/1000, "ms-p50")
	b.ReportMetric(float64(worst.Microseconds())/1000, "ms-max")
	b.Logf("launch to first wizard frame over %d launches: p50 %v, max %v (target < 150ms)", len(times), p50.Round(time.Millisecond), worst.Round(time.Millisecond))
}

// firstFrame launches the binary on a new pty and returns how long until
// the welcome screen's title and key help are drawn.
func firstFrame(b *testing.B, bin, dir string) time.Duration {
	master, slave, err := openPTY(80, 24)
	if err != nil {
		b.Fatal(err)
	}
	defer master.Close()
	cfg := filepath.Join(dir, "cfg", "dc-agent.toml")
	cmd := exec.Command(bin, "--config", cfg, "--service-root", filepath.Join(dir, "root"))
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir, "TERM=xterm-256color", "LANG=C.UTF-8"}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	slave.Close()
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	var seen []byte
	buf := make([]byte, 64<<10)
	deadline := start.Add(10 * time.Second)
	for {
		_ = master.SetReadDeadline(deadline)
		n, err := master.Read(buf)
		if err != nil {
			b.Fatalf("no first frame: %v\n%q", err, seen)
		}
		seen = append(seen, buf[:n]...)
		// Answer what a terminal answers: background color, cursor position.
		if bytes.Contains(buf[:n], []byte("\x1b]11;?")) {
			_, _ = master.Write([]byte("\x1b]11;rgb:0000/0000/0000\x1b\\"))
		}
		if bytes.Contains(buf[:n], []byte("\x1b[6n")) {
			_, _ = master.Write([]byte("\x1b[1;1R"))
		}
		if bytes.Contains(seen, []byte("Welcome")) && bytes.Contains(seen, []byte("quit")) {
			return time.Since(start)
		}
	}
}

// openPTY opens a pseudo-terminal pair of the given size.
func openPTY(cols, rows uint16) (master, slave *os.File, err error) {
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, nil, err
	}
	fd := int(m.Fd())
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		m.Close()
		return nil, nil, err
	}
	n, err := unix.IoctlGetInt(fd, unix.TIOCGPTN)
	if err != nil {
		m.Close()
		return nil, nil, err
	}
	s, err := os.OpenFile("/dev/pts/"+strconv.Itoa(n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		m.Close()
		return nil, nil, err
	}
	ws := &unix.Winsize{Row: rows, Col: cols}
	if err := unix.IoctlSetWinsize(int(s.Fd()), unix.TIOCSWINSZ, ws); err != nil {
		m.Close()
		s.Close()
		return nil, nil, err
	}
	return m, s, nil
}
