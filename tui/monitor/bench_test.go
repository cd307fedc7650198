package monitor

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"golang.org/x/sys/unix"
)

// The benchmarks run the real `dc-agent monitor` binary on a pseudo
// terminal (80x24) against a real agent and the reference dc-api:
//
//	go test -run '^$' -bench . -benchtime 5x ./tui/monitor/
//
// BenchmarkLaunchToFirstFrame: exec → the first frame on the terminal
// (target < 150 ms), and → the first frame showing the agent's state.
// BenchmarkIdleCPU: the monitor's CPU time while it sits on the screen for
// 10 s (BENCH_QUICK=1: 3 s), with its 1 s clock tick, 2 s state refresh
// and the event stream open.

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

// dcAgentBinary builds cmd/dc-agent once (no -race: it is measured).
func dcAgentBinary(b *testing.B) string {
	binOnce.Do(func() {
		dir, err := os.MkdirTemp("", "dcm-bench-")
		if err != nil {
			binErr = err
			return
		}
		binPath = filepath.Join(dir, "dc-agent")
		goTool := filepath.Join(runtime.GOROOT(), "bin", "go")
		cmd := exec.Command(goTool, "build", "-o", binPath, "github.com/decent-stuff/dc-agent/cmd/dc-agent")
		cmd.Env = append(os.Environ(), "GOTOOLCHAIN=local")
		if out, err := cmd.CombinedOutput(); err != nil {
			binErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		b.Fatal(binErr)
	}
	return binPath
}

// openPTY returns a pseudo terminal's master and slave, sized 80x24.
func openPTY() (master, slave *os.File, err error) {
	master, err = os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, nil, err
	}
	fd := int(master.Fd())
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		master.Close()
		return nil, nil, fmt.Errorf("unlock pty: %w", err)
	}
	n, err := unix.IoctlGetInt(fd, unix.TIOCGPTN)
	if err != nil {
		master.Close()
		return nil, nil, fmt.Errorf("pty number: %w", err)
	}
	slave, err = os.OpenFile("/dev/pts/"+strconv.Itoa(n), os.O_RDWR|syscall.O_NOCTTY|syscall.O_CLOEXEC, 0)
	if err != nil {
		master.Close()
		return nil, nil, err
	}
	if err := unix.IoctlSetWinsize(int(slave.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: 24, Col: 80}); err != nil {
		master.Close()
		slave.Close()
		return nil, nil, err
	}
	return master, slave, nil
}

// monitorProc is `dc-agent monitor` running on a pty.
type monitorProc struct {
	cmd    *exec.Cmd
	master *os.File
	mu     sync.Mutex
	out    bytes.Buffer
	seen   chan struct{} // pinged on every read
	done   chan struct{}
}

func startMonitor(b *testing.B, bin, cfgPath string) (*monitorProc, time.Time) {
	b.Helper()
	master, slave, err := openPTY()
	if err != nil {
		b.Skipf("no pseudo terminal here: %v", err)
	}
	p := &monitorProc{master: master, seen: make(chan struct{}, 1), done: make(chan struct{})}
	p.cmd = exec.Command(bin, "monitor", "--config", cfgPath)
	p.cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "TERM=xterm-256color", "HOME=" + b.TempDir(), "LANG=C.UTF-8"}
	p.cmd.Stdin, p.cmd.Stdout, p.cmd.Stderr = slave, slave, slave
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	start := time.Now()
	if err := p.cmd.Start(); err != nil {
		b.Fatal(err)
	}
	slave.Close()
	go func() {
		buf := make([]byte, 32<<10)
		for {
			n, err := master.Read(buf)
			if n > 0 {
				// Answer like xterm: bubbletea's package init asks for the
				// background color (OSC 11) and the cursor position before
				// the program starts; a terminal that never answers would
				// cost termenv's 5 s timeout.
				if bytes.Contains(buf[:n], []byte("\x1b]11;?")) {
					_, _ = master.Write([]byte("\x1b]11;rgb:0000/0000/0000\x1b\\"))
				}
				if bytes.Contains(buf[:n], []byte("\x1b[6n")) {
					_, _ = master.Write([]byte("\x1b[1;1R"))
				}
				p.mu.Lock()
				p.out.Write(buf[:n])
				p.mu.Unlock()
				select {
				case p.seen <- struct{}{}:
				default:
				}
			}
			if err != nil {
				close(p.done)
				return
			}
		}
	}()
	b.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		_ = p.cmd.Wait()
		master.Close()
	})
	return p, start
}

// waitFor returns when the terminal has shown want.
func (p *monitorProc) waitFor(b *testing.B, want string) time.Time {
	b.Helper()
	deadline := time.After(20 * time.Second)
	for {
		p.mu.Lock()
		ok := bytes.Contains(p.out.Bytes(), []byte(want))
		p.mu.Unlock()
		if ok {
			return time.Now()
		}
		select {
		case <-p.seen:
		case <-p.done:
			b.Fatalf("the monitor exited before showing %q:\n%s", want, p.out.String())
		case <-deadline:
			b.Fatalf("the monitor never showed %q:\n%s", want, p.out.String())
		}
	}
}

// quit presses q and waits for the process to end; it returns its rusage.
func (p *monitorProc) quit(b *testing.B) *syscall.Rusage {
	b.Helper()
	if _, err := p.master.Write([]byte("q")); err != nil {
		b.Fatal(err)
	}
	if err := p.cmd.Wait(); err != nil {
		b.Fatalf("monitor exited with %v:\n%s", err, p.out.String())
	}
	return p.cmd.ProcessState.SysUsage().(*syscall.Rusage)
}

// cpuTime reads a process's user+system CPU time from /proc.
func cpuTime(pid int) (time.Duration, error) {
	raw, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// Fields after the command name (which may hold spaces) in parens.
	f := strings.Fields(string(raw[bytes.LastIndexByte(raw, ')')+2:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	const hz = 100 // USER_HZ on Linux
	return time.Duration(ut+st) * time.Second / hz, nil
}

func rusageCPU(ru *syscall.Rusage) time.Duration {
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func BenchmarkLaunchToFirstFrame(b *testing.B) {
	bin := dcAgentBinary(b)
	w := newLiveWorld(b)
	w.startAgent(b)
	var first, full time.Duration
	b.ResetTimer()
	var query, version time.Duration
	for range b.N {
		// The baseline: the same binary doing nothing (exec, package
		// initialisation, exit).
		vs := time.Now()
		if out, err := exec.Command(bin, "version").CombinedOutput(); err != nil {
			b.Fatalf("dc-agent version: %v\n%s", err, out)
		}
		version += time.Since(vs)
		p, start := startMonitor(b, bin, w.path)
		t0 := p.waitFor(b, "\x1b[6n")
		t1 := p.waitFor(b, "dc-agent monitor")
		query += t0.Sub(start)
		t2 := p.waitFor(b, "heartbeat accepted")
		p.quit(b)
		first += t1.Sub(start)
		full += t2.Sub(start)
	}
	b.StopTimer()
	n := time.Duration(b.N)
	b.ReportMetric(float64((first/n).Microseconds())/1000, "ms/first-frame")
	b.ReportMetric(float64((full/n).Microseconds())/1000, "ms/state-frame")
	fmt.Printf("launch → first frame: %s (target < 150ms); → frame with the agent's state: %s; → bubbletea's init-time terminal query: %s; baseline `dc-agent version` exec→exit: %s (mean of %d)\n",
		(first / n).Round(100*time.Microsecond), (full / n).Round(100*time.Microsecond), (query / n).Round(100*time.Microsecond), (version / n).Round(100*time.Microsecond), b.N)
}

func BenchmarkIdleCPU(b *testing.B) {
	bin := dcAgentBinary(b)
	w := newLiveWorld(b)
	w.startAgent(b)
	idle := 10 * time.Second
	if os.Getenv("BENCH_QUICK") == "1" {
		idle = 3 * time.Second
	}
	b.ResetTimer()
	for range b.N {
		p, _ := startMonitor(b, bin, w.path)
		p.waitFor(b, "heartbeat accepted")
		time.Sleep(time.Second) // past the start-up work
		c0, err := cpuTime(p.cmd.Process.Pid)
		if err != nil {
			b.Fatal(err)
		}
		t0 := time.Now()
		time.Sleep(idle)
		c1, err := cpuTime(p.cmd.Process.Pid)
		if err != nil {
			b.Fatal(err)
		}
		wall := time.Since(t0)
		p.mu.Lock()
		frames := bytes.Count(p.out.Bytes(), []byte("\x1b["))
		p.mu.Unlock()
		total := rusageCPU(p.quit(b))
		pct := float64(c1-c0) / float64(wall) * 100
		b.ReportMetric(pct, "%cpu-idle")
		fmt.Printf("idle monitor: %s CPU over %s (%.2f%% of one core); whole run incl. start and quit: %s CPU; %d escape sequences written\n",
			c1-c0, wall.Round(time.Millisecond), pct, total.Round(time.Millisecond), frames)
	}
}

// signalWriter closes hit on the first write that contains want.
type signalWriter struct {
	want []byte
	once sync.Once
	hit  chan struct{}
	mu   sync.Mutex
	seen []byte
}

func (s *signalWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	s.seen = append(s.seen, p...)
	found := bytes.Contains(s.seen, s.want)
	s.mu.Unlock()
	if found {
		s.once.Do(func() { close(s.hit) })
	}
	return len(p), nil
}

// BenchmarkInProcessFirstFrame isolates the monitor's own share of the
// launch: New (config load, clients) → Program.Run → the first frame
// written, without process start-up and package initialisation.
func BenchmarkInProcessFirstFrame(b *testing.B) {
	w := newLiveWorld(b)
	w.startAgent(b)
	var total time.Duration
	b.ResetTimer()
	for range b.N {
		out := &signalWriter{want: []byte("dc-agent monitor"), hit: make(chan struct{})}
		in, inW := io.Pipe()
		start := time.Now()
		m := New(Options{ConfigPath: w.path, Input: in, Output: out, Renderer: plainRenderer()})
		p := tea.NewProgram(m, tea.WithInput(in), tea.WithOutput(out), tea.WithFPS(runFPS), tea.WithoutSignalHandler())
		done := make(chan struct{})
		go func() { _, _ = p.Run(); close(done) }()
		select {
		case <-out.hit:
		case <-time.After(10 * time.Second):
			b.Fatal("no first frame within 10s")
		}
		total += time.Since(start)
		p.Quit()
		<-done
		m.Close()
		inW.Close()
	}
	b.StopTimer()
	mean := total / time.Duration(b.N)
	b.ReportMetric(float64(mean.Microseconds())/1000, "ms/first-frame")
	fmt.Printf("in-process New → first frame: %s (mean of %d)\n", mean.Round(10*time.Microsecond), b.N)
}
