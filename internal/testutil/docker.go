package testutil

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Dockerd is a real Docker daemon started for one test package: its own
// --data-root, --exec-root, unix socket and pid file in a temp dir, vfs
// storage (DESIGN.md), and its own network namespace, so the networks it
// makes never touch the machine's interfaces, routes or rules. By default
// it has no iptables and no default bridge: a container on the default
// network has none, and port bindings are recorded but not reachable from
// the test.
type Dockerd struct {
	Dir    string
	Socket string
	// Host is the DOCKER_HOST form of Socket ("unix:///...").
	Host string

	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
}

// DockerEnv is the daemon of a test package, started in TestMain:
//
//	var docker *testutil.DockerEnv
//	func TestMain(m *testing.M) {
//		docker = testutil.StartDockerEnv()
//		code := m.Run()
//		docker.Stop()
//		os.Exit(code)
//	}
//
// Tests call docker.Require(t). If the daemon could not start, Require
// fails the test under `make test` and skips it elsewhere.
type DockerEnv struct {
	D   *Dockerd
	Err error
}

// StartDockerEnv starts a daemon, recording (not returning) failure.
func StartDockerEnv() *DockerEnv { return StartDockerEnvWith(DockerdOptions{}) }

// StartDockerEnvWith is StartDockerEnv with options.
func StartDockerEnvWith(o DockerdOptions) *DockerEnv {
	d, err := StartDockerdWith(o)
	return &DockerEnv{D: d, Err: err}
}

// ImportBusybox imports the busybox image as ref into the daemon, if it
// runs, within two minutes; failure is recorded in Err.
func (e *DockerEnv) ImportBusybox(ref string) {
	if e.D == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := e.D.ImportBusybox(ctx, ref); err != nil {
		e.Err = err
	}
}

// DockerdOptions shape a test daemon.
type DockerdOptions struct {
	// Network makes the daemon's networking what a production host has,
	// inside its namespace: iptables rules (network isolation, ICC) and
	// the default bridge, so containers reach each other as they would
	// on a real host.
	Network bool
}

// Require returns the daemon, or fails/skips the test if there is none.
func (e *DockerEnv) Require(t testing.TB) *Dockerd {
	t.Helper()
	if e == nil || e.D == nil {
		why := "no dockerd started (call testutil.StartDockerEnv in TestMain)"
		if e != nil && e.Err != nil {
			why = e.Err.Error()
		}
		Unavailable(t, why)
	}
	return e.D
}

// Stop stops the daemon if it runs.
func (e *DockerEnv) Stop() {
	if e != nil && e.D != nil {
		if err := e.D.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "testutil: stopping dockerd:", err)
		}
	}
}

// findDockerd is RequireBinary without a testing.TB.
func findDockerd() (string, error) {
	if p, err := exec.LookPath("dockerd"); err == nil {
		return p, nil
	}
	for _, c := range []string{"/usr/sbin/dockerd", "/usr/bin/dockerd"} {
		if st, err := os.Stat(c); err == nil && st.Mode()&0o111 != 0 {
			return c, nil
		}
	}
	return "", errors.New("dockerd is not installed (run: make test-deps, which installs docker.io)")
}

// StartDockerd starts a daemon and waits until it answers /_ping.
func StartDockerd() (*Dockerd, error) { return StartDockerdWith(DockerdOptions{}) }

// StartDockerdWith is StartDockerd with options.
func StartDockerdWith(o DockerdOptions) (*Dockerd, error) {
	bin, err := findDockerd()
	if err != nil {
		return nil, err
	}
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		return nil, errors.New("unshare is not installed (util-linux): the test daemon runs in its own network namespace")
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("dockerd needs root (run the tests as root, as CI does)")
	}
	// Short base path: unix socket paths are limited to 108 bytes and
	// containerd puts its own sockets under the exec root.
	dir, err := os.MkdirTemp("", "dcd")
	if err != nil {
		return nil, err
	}
	d := &Dockerd{
		Dir:     dir,
		Socket:  filepath.Join(dir, "docker.sock"),
		logPath: filepath.Join(dir, "dockerd.log"),
		done:    make(chan struct{}),
	}
	d.Host = "unix://" + d.Socket
	logf, err := os.Create(d.logPath)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	ip, err := exec.LookPath("ip")
	if err != nil {
		return nil, errors.New("ip is not installed (iproute2): the test daemon's network namespace needs its loopback up")
	}
	// In a new network namespace (unshare), with its loopback up (published
	// ports bind 127.0.0.1 there), the shell execs dockerd: one process.
	args := []string{"--net", "/bin/sh", "-c", `"$0" link set lo up && exec "$@"`, ip, bin,
		"--data-root", filepath.Join(dir, "data"),
		"--exec-root", filepath.Join(dir, "exec"),
		"--pidfile", filepath.Join(dir, "docker.pid"),
		"-H", d.Host,
		"--storage-driver=vfs",
		// Keep the daemon's config and any system containerd out of it.
		"--config-file", filepath.Join(dir, "daemon.json"),
	}
	if !o.Network {
		args = append(args, "--iptables=false", "--bridge=none")
	}
	d.cmd = exec.Command(unshare, args...)
	if err := os.WriteFile(filepath.Join(dir, "daemon.json"), []byte("{}\n"), 0o600); err != nil {
		return nil, err
	}
	d.cmd.Stdout, d.cmd.Stderr = logf, logf
	// Own process group: stopping it takes its containerd along. If the
	// test binary dies without stopping it (a timeout's SIGQUIT, a kill),
	// the kernel sends SIGTERM. Pdeathsig follows the forking thread, so
	// fork from a locked one: unlocking keeps that thread alive.
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	runtime.LockOSThread()
	err = d.cmd.Start()
	runtime.UnlockOSThread()
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("start dockerd: %w", err)
	}
	go func() { _ = d.cmd.Wait(); close(d.done) }()

	deadline := time.Now().Add(60 * time.Second)
	for {
		if err := d.ping(); err == nil {
			return d, nil
		}
		select {
		case <-d.done:
			log := d.Log()
			_ = os.RemoveAll(dir)
			return nil, fmt.Errorf("dockerd exited during startup:\n%s", tail(log, 40))
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			log := d.Log()
			_ = d.Stop()
			return nil, fmt.Errorf("dockerd did not answer on %s within 60s:\n%s", d.Socket, tail(log, 40))
		}
	}
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// HTTPClient talks to the daemon's socket (for raw API calls in tests).
func (d *Dockerd) HTTPClient() *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var dl net.Dialer
			return dl.DialContext(ctx, "unix", d.Socket)
		},
	}}
}

func (d *Dockerd) ping() error {
	c := d.HTTPClient()
	c.Timeout = 2 * time.Second
	resp, err := c.Get("http://docker/_ping")
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("ping: %s", resp.Status)
	}
	return nil
}

// Log returns the daemon's log so far.
func (d *Dockerd) Log() string {
	b, _ := os.ReadFile(d.logPath)
	return string(b)
}

// Stop removes every container (so none outlives the daemon), stops the
// daemon (SIGTERM, then SIGKILL to its process group after 20s) and
// deletes its directory.
func (d *Dockerd) Stop() error {
	if d.cmd == nil || d.cmd.Process == nil {
		return nil
	}
	select {
	case <-d.done:
	default:
		d.removeAllContainers()
		_ = d.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-d.done:
		case <-time.After(20 * time.Second):
			_ = syscall.Kill(-d.cmd.Process.Pid, syscall.SIGKILL)
			<-d.done
		}
	}
	// The daemon's process group (containerd, shims) goes with it.
	_ = syscall.Kill(-d.cmd.Process.Pid, syscall.SIGKILL)
	unmountUnder(d.Dir)
	if err := os.RemoveAll(d.Dir); err != nil {
		return fmt.Errorf("remove %s: %w", d.Dir, err)
	}
	return nil
}

func (d *Dockerd) removeAllContainers() {
	c := d.HTTPClient()
	c.Timeout = 30 * time.Second
	resp, err := c.Get("http://docker/containers/json?all=1")
	if err != nil {
		return
	}
	var list []struct{ ID string }
	_ = json.NewDecoder(resp.Body).Decode(&list)
	resp.Body.Close()
	for _, ct := range list {
		req, _ := http.NewRequest(http.MethodDelete, "http://docker/containers/"+ct.ID+"?force=1&v=1", nil)
		if r, err := c.Do(req); err == nil {
			r.Body.Close()
		}
	}
}

// unmountUnder unmounts anything the daemon left mounted below dir (netns
// files, shm), deepest first, so the directory can be removed.
func unmountUnder(dir string) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return
	}
	var mounts []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && strings.HasPrefix(f[4], dir+"/") {
			mounts = append(mounts, f[4])
		}
	}
	for i := len(mounts) - 1; i >= 0; i-- {
		_ = syscall.Unmount(mounts[i], syscall.MNT_DETACH)
	}
}

// BusyboxCmd is the default command of the image ImportBusybox builds: it
// runs until stopped and exits at once on SIGTERM (a plain sleep as PID 1
// would ignore the signal and delay every stop by the stop timeout).
const BusyboxCmd = `trap 'kill $! 2>/dev/null; exit 0' TERM INT; sleep 2147483647 & wait`

// ImportBusybox builds image ref the way `docker import` does (POST
// /images/create?fromSrc=-) from a rootfs tarball holding the static
// busybox (Debian busybox-static), its applet links and a root account.
func (d *Dockerd) ImportBusybox(ctx context.Context, ref string) error {
	return d.ImportBusyboxCmd(ctx, ref, []string{"/bin/sh", "-c", BusyboxCmd})
}

// ImportBusyboxCmd is ImportBusybox with another default command.
func (d *Dockerd) ImportBusyboxCmd(ctx context.Context, ref string, command []string) error {
	rootfs, err := BusyboxRootfs()
	if err != nil {
		return err
	}
	repo, tag, ok := strings.Cut(ref, ":")
	if !ok {
		tag = "latest"
	}
	q := url.Values{}
	q.Set("fromSrc", "-")
	q.Set("repo", repo)
	q.Set("tag", tag)
	cmd, _ := json.Marshal(command)
	q.Add("changes", "CMD "+string(cmd))
	q.Add("changes", "ENV PATH=/bin")
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://docker/images/create?"+q.Encode(), bytes.NewReader(rootfs))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/x-tar")
	resp, err := d.HTTPClient().Do(req)
	if err != nil {
		return fmt.Errorf("import busybox image: %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || bytes.Contains(body, []byte(`"error"`)) {
		return fmt.Errorf("import busybox image: %s: %s", resp.Status, body)
	}
	return nil
}

const chpasswdScript = `#!/bin/sh
while IFS=: read -r user pw; do
	[ -n "$user" ] || continue
	hash=$(printf '%s' "$pw" | mkpasswd -m sha512 -P 0) || exit 1
	grep -q "^$user:" /etc/shadow || { echo "chpasswd: unknown user $user" >&2; exit 1; }
	sed -i "s|^$user:[^:]*:|$user:$hash:|" /etc/shadow || exit 1
done
`

// BusyboxRootfs returns a tar of a minimal root filesystem around the
// static busybox binary.
func BusyboxRootfs() ([]byte, error) {
	var bin string
	for _, c := range []string{"/bin/busybox", "/usr/bin/busybox"} {
		if _, err := os.Stat(c); err == nil {
			bin = c
			break
		}
	}
	if bin == "" {
		return nil, errors.New("busybox is not installed (run: make test-deps, which installs busybox-static)")
	}
	data, err := os.ReadFile(bin)
	if err != nil {
		return nil, err
	}
	if !bytes.HasPrefix(data, []byte("\x7fELF")) {
		return nil, fmt.Errorf("%s is not an ELF binary", bin)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	now := time.Unix(1_700_000_000, 0)
	dir := func(name string, mode int64) error {
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: mode, ModTime: now})
	}
	file := func(name string, mode int64, body []byte) error {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(body)), ModTime: now}); err != nil {
			return err
		}
		_, err := tw.Write(body)
		return err
	}
	for _, d := range []string{"bin", "etc", "root", "tmp", "proc", "sys", "dev", "var", "run"} {
		mode := int64(0o755)
		if d == "tmp" {
			mode = 0o1777
		}
		if d == "root" {
			mode = 0o700
		}
		if err := dir(d, mode); err != nil {
			return nil, err
		}
	}
	if err := file("bin/busybox", 0o755, data); err != nil {
		return nil, err
	}
	for _, applet := range []string{"sh", "sleep", "cat", "ls", "echo", "id", "true", "false", "mkdir", "kill", "ps", "env", "grep", "hostname", "wc", "sed", "mkpasswd", "printf", "nc", "httpd", "wget"} {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: "bin/" + applet, Linkname: "busybox", Mode: 0o777, ModTime: now}); err != nil {
			return nil, err
		}
	}
	for name, body := range map[string]string{
		"etc/passwd": "root:x:0:0:root:/root:/bin/sh\n",
		"etc/group":  "root:x:0:\n",
	} {
		if err := file(name, 0o644, []byte(body)); err != nil {
			return nil, err
		}
	}
	if err := file("etc/shadow", 0o600, []byte("root:*:19000:0:99999:7:::\n")); err != nil {
		return nil, err
	}
	// Debian's busybox has no chpasswd applet; this one keeps its
	// interface (user:password lines on stdin) as real images have it.
	if err := file("bin/chpasswd", 0o755, []byte(chpasswdScript)); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
