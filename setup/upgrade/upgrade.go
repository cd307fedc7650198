package upgrade

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"
)

// Service is the running agent as the upgrade sees it.
type Service interface {
	// Active reports whether the service runs.
	Active(ctx context.Context) (bool, error)
	// Running returns the version the running agent reports and how many
	// provisions it has in flight.
	Running(ctx context.Context) (version string, inFlight int, err error)
	// Restart restarts the service and waits until it is active again.
	Restart(ctx context.Context) error
}

// Options describe one upgrade.
type Options struct {
	Source Source
	// Version is the release to install ("" = the latest).
	Version string
	// Current is the version of this dc-agent (buildinfo.Version).
	Current string
	// Binary is the installed executable to replace.
	Binary string
	// Arch is the release arch (default runtime.GOARCH).
	Arch string
	// Check only reports what would be installed.
	Check bool
	// OnlyNewer skips a release that is not newer than Current
	// (auto-update never downgrades).
	OnlyNewer bool
	// Service restarts the running agent into the new binary (nil: no
	// restart).
	Service Service
	// IdleWait bounds waiting for in-flight provisions before the restart
	// (default 10 minutes); after it the restart is left to the operator.
	IdleWait time.Duration
	// Poll is how often the wait asks the agent (default 2s).
	Poll time.Duration
	// Progress receives a line per step (may be nil).
	Progress func(string)
}

// Result says what happened.
type Result struct {
	Current string `json:"current"`
	Target  string `json:"target"`
	// Available: Target differs from Current and would be installed.
	Available bool `json:"available"`
	// Installed: the binary was replaced.
	Installed bool `json:"installed"`
	// Previous is where the replaced binary was kept.
	Previous string `json:"previous,omitempty"`
	// Restarted: the service now runs Target.
	Restarted bool `json:"restarted"`
	// RestartPending explains why the service still runs an older binary.
	RestartPending string `json:"restart_pending,omitempty"`
}

func (o *Options) say(format string, args ...any) {
	if o.Progress != nil {
		o.Progress(fmt.Sprintf(format, args...))
	}
}

// ErrRolledBack wraps the reason a new binary was taken back.
var ErrRolledBack = errors.New("rolled back to the previous binary")

// Run performs the upgrade o describes.
func Run(ctx context.Context, o Options) (Result, error) {
	if o.Arch == "" {
		o.Arch = runtime.GOARCH
	}
	if o.IdleWait == 0 {
		o.IdleWait = 10 * time.Minute
	}
	if o.Poll == 0 {
		o.Poll = 2 * time.Second
	}
	res := Result{Current: o.Current}
	asset, err := AssetName(o.Arch)
	if err != nil {
		return res, err
	}
	target := o.Version
	if target == "" {
		if target, err = o.Source.Latest(ctx); err != nil {
			return res, err
		}
	} else if err := ValidVersion(target); err != nil {
		return res, err
	}
	res.Target = target
	switch {
	case target == o.Current:
		o.say("dc-agent %s is the installed version", target)
		return res, o.restartIfStale(ctx, &res)
	case o.OnlyNewer && !Newer(target, o.Current):
		o.say("the latest release %s is not newer than %s; nothing to do", target, o.Current)
		return res, nil
	}
	res.Available = true
	if o.Check {
		o.say("dc-agent %s is available (installed: %s)", target, o.Current)
		return res, nil
	}

	unlock, err := lockDir(filepath.Dir(o.Binary))
	if err != nil {
		return res, err
	}
	defer unlock()
	sums, err := o.Source.Checksums(ctx, target)
	if err != nil {
		return res, err
	}
	want, ok := sums[asset]
	if !ok {
		return res, fmt.Errorf("SHA256SUMS of %s lists no %s; refusing to install", target, asset)
	}
	o.say("downloading %s %s", asset, target)
	tmp, err := o.download(ctx, o.Source.AssetURL(target, asset), want)
	if err != nil {
		return res, err
	}
	defer os.Remove(tmp) // gone after the rename; cleans up on failure
	prev, err := swap(o.Binary, tmp)
	if err != nil {
		return res, err
	}
	res.Installed, res.Previous = true, prev
	o.say("installed %s (previous version kept as %s)", o.Binary, prev)
	if err := checkVersion(ctx, o.Binary, target); err != nil {
		if rerr := rollback(o.Binary, prev); rerr != nil {
			return res, fmt.Errorf("the new binary failed (%v) and rolling back failed too: %w; restore it with: mv %s %s", err, rerr, prev, o.Binary)
		}
		res.Installed = false
		return res, fmt.Errorf("%w: dc-agent %s does not run here: %v", ErrRolledBack, target, err)
	}
	if err := o.restartIfStale(ctx, &res); err != nil {
		if !errors.Is(err, errNewVersionFailed) {
			return res, err
		}
		// The new version does not start: put the old one back and start it.
		if rerr := rollback(o.Binary, prev); rerr != nil {
			return res, fmt.Errorf("%v; rolling back failed too: %w", err, rerr)
		}
		res.Installed = false
		o.say("rolled back to %s; restarting it", o.Current)
		if rerr := o.Service.Restart(ctx); rerr != nil {
			return res, fmt.Errorf("%w: %v; restarting the previous version failed too: %v", ErrRolledBack, err, rerr)
		}
		return res, fmt.Errorf("%w: %v", ErrRolledBack, err)
	}
	return res, nil
}

var errNewVersionFailed = errors.New("the new version did not start")

// restartIfStale restarts the service when it runs another version than
// res.Target, once no provision is in flight.
func (o *Options) restartIfStale(ctx context.Context, res *Result) error {
	if o.Service == nil || o.Check {
		return nil
	}
	active, err := o.Service.Active(ctx)
	if err != nil {
		return err
	}
	if !active {
		if res.Installed {
			o.say("the service is not running; it starts %s next time", res.Target)
		}
		return nil
	}
	deadline := time.Now().Add(o.IdleWait)
	for {
		running, inFlight, err := o.Service.Running(ctx)
		if err != nil {
			res.RestartPending = fmt.Sprintf("cannot ask the running agent whether provisions are in flight (%v); restart it when idle: systemctl restart dc-agent", err)
			o.say("%s", res.RestartPending)
			return nil
		}
		if running == res.Target {
			if res.Installed {
				o.say("the service already runs %s", running)
			}
			return nil
		}
		if inFlight == 0 {
			break
		}
		if !time.Now().Before(deadline) {
			res.RestartPending = fmt.Sprintf("%d provision(s) still in flight after %s; the service keeps running %s: restart it when idle (systemctl restart dc-agent) or run dc-agent upgrade again", inFlight, o.IdleWait, running)
			o.say("%s", res.RestartPending)
			return nil
		}
		o.say("waiting for %d provision(s) in flight before restarting", inFlight)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(o.Poll):
		}
	}
	o.say("restarting the service into %s", res.Target)
	if err := o.Service.Restart(ctx); err != nil {
		return fmt.Errorf("%w: %v", errNewVersionFailed, err)
	}
	res.Restarted = true
	return nil
}

// download fetches url into a temp file beside o.Binary and checks it
// against want (hex SHA-256). It returns the temp file's path.
func (o *Options) download(ctx context.Context, url, want string) (string, error) {
	body, err := o.Source.get(ctx, url)
	if err != nil {
		return "", err
	}
	defer body.Close()
	f, err := os.CreateTemp(filepath.Dir(o.Binary), ".dc-agent.download-*")
	if err != nil {
		if errors.Is(err, fs.ErrPermission) {
			return "", fmt.Errorf("cannot write to %s: upgrading needs root (sudo dc-agent upgrade)", filepath.Dir(o.Binary))
		}
		return "", fmt.Errorf("create a temp file beside %s: %w", o.Binary, err)
	}
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, h), io.LimitReader(body, maxBinaryBytes+1))
	if err != nil {
		return "", fmt.Errorf("download %s: %w", url, err)
	}
	if n > maxBinaryBytes {
		return "", fmt.Errorf("download %s: larger than %d MiB; refusing", url, maxBinaryBytes>>20)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != want {
		return "", fmt.Errorf("checksum mismatch for %s: SHA256SUMS says %s, the download is %s; nothing was installed", url, want, got)
	}
	if err := f.Chmod(0o755); err != nil {
		return "", err
	}
	if err := f.Sync(); err != nil {
		return "", err
	}
	if err := f.Close(); err != nil {
		return "", err
	}
	ok = true
	return f.Name(), nil
}

// swap installs tmp as bin, keeping the old bin as bin.previous. Both
// steps are renames or links within one directory: at any instant bin is
// the old or the new binary, never missing or torn, and a running agent
// keeps executing its old inode.
func swap(bin, tmp string) (prev string, err error) {
	prev = bin + ".previous"
	if _, err := os.Lstat(bin); err == nil {
		if err := os.Remove(prev); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("remove the older %s: %w", prev, err)
		}
		if err := os.Link(bin, prev); err != nil {
			return "", fmt.Errorf("keep the previous binary as %s: %w", prev, err)
		}
	} else {
		prev = ""
	}
	if err := os.Rename(tmp, bin); err != nil {
		return "", fmt.Errorf("install %s: %w", bin, err)
	}
	syncDir(filepath.Dir(bin))
	return prev, nil
}

// rollback puts prev back as bin, keeping prev.
func rollback(bin, prev string) error {
	if prev == "" {
		return errors.New("there is no previous binary")
	}
	tmp := filepath.Join(filepath.Dir(bin), ".dc-agent.rollback")
	_ = os.Remove(tmp)
	if err := os.Link(prev, tmp); err != nil {
		return err
	}
	if err := os.Rename(tmp, bin); err != nil {
		os.Remove(tmp)
		return err
	}
	syncDir(filepath.Dir(bin))
	return nil
}

func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
}

// checkVersion runs `bin --version` and wants it to name version.
func checkVersion(ctx context.Context, bin, version string) error {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "--version").CombinedOutput()
	text := strings.TrimSpace(string(out))
	if len(text) > 300 {
		text = text[:300] + "…"
	}
	if err != nil {
		return fmt.Errorf("%s --version: %v: %s", bin, err, text)
	}
	if !strings.Contains(" "+text+" ", " "+version+" ") {
		return fmt.Errorf("%s --version says %q, expected version %s", bin, text, version)
	}
	return nil
}

// lockDir takes an exclusive lock on the binary's directory so that two
// upgrades (the timer and a person) never swap the binary at once. The
// lock is on the directory itself: no lock file is left behind.
func lockDir(dir string) (func(), error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", dir, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("another dc-agent upgrade is running (it holds the lock on %s)", dir)
	}
	return func() {
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}
