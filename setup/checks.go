package setup

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/decent-stuff/dc-agent/config"
	"github.com/decent-stuff/dc-agent/dcapi"
	"github.com/decent-stuff/dc-agent/setup/service"
)

// The checks of the setup answers, shared by the flow and by the front
// ends that check as the provider types.

// CheckEndpoint checks an API endpoint answer.
func CheckEndpoint(s string) error {
	if s == "" {
		return errors.New("required")
	}
	_, err := dcapi.ParseEndpoint(s)
	return err
}

// CheckHost checks a host name or address: nothing a shell or ssh would
// read as more than a name.
func CheckHost(s string) error {
	if s == "" {
		return errors.New("required: the node's name or address")
	}
	if strings.ContainsAny(s, " \t\r\n'\"`$;&|<>\\") {
		return errors.New("not a host name or address")
	}
	return nil
}

// CheckPort checks an SSH port.
func CheckPort(n int) error {
	if n < 1 || n > 65535 {
		return errors.New("a port number, 1 to 65535")
	}
	return nil
}

// ParsePort reads a typed port ("" is 22).
func ParsePort(s string) (int, error) {
	if s == "" {
		return 22, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0, errors.New("a port number, 1 to 65535")
	}
	return n, CheckPort(n)
}

// CheckKeyFile checks that an SSH key file answer names a file.
func CheckKeyFile(p string) error {
	if p == "" {
		return nil
	}
	if st, err := os.Stat(ExpandHome(p)); err != nil || st.IsDir() {
		return fmt.Errorf("no key file at %s", p)
	}
	return nil
}

// ExpandHome replaces a leading "~/" with the home dir.
func ExpandHome(p string) string {
	if rest, ok := strings.CutPrefix(p, "~/"); ok {
		if h, err := os.UserHomeDir(); err == nil {
			return filepath.Join(h, rest)
		}
	}
	return p
}

func checkImageDir(dir string) error {
	if !path.IsAbs(dir) {
		return Fixf("pass an absolute --image-dir", "image dir %q is not an absolute path", dir)
	}
	if strings.ContainsAny(dir, ",=\n") {
		// The image path goes into a PVE property string (import-from=...),
		// which has no way to quote these.
		return Fixf("pass an --image-dir without commas, '=' or newlines", "image dir %q cannot be used in a Proxmox disk option", dir)
	}
	return nil
}

func checkVMIDBase(n int) error {
	if n < 100 || n > 999999000 {
		return Fixf("pass --template-vmid-base between 100 and 999999000", "template VMID base %d is out of range", n)
	}
	return nil
}

// oldProxmox is the existing config's Proxmox settings, if any.
func oldProxmox(c *config.Config) *config.ProxmoxConfig {
	var old *config.ProxmoxConfig
	if c == nil {
		return nil
	}
	for _, p := range c.AllProvisioners() {
		if p.Type == config.TypeProxmox && p.Proxmox != nil {
			old = p.Proxmox
		}
	}
	return old
}

// RequestFilePath is where the delegation request is kept for the provider.
func RequestFilePath(configPath string) string {
	return strings.TrimSuffix(configPath, ".toml") + ".delegation-request"
}

// Check is one prerequisite: OK, a warning (go on, but know this), or a
// failure that blocks the setup until fixed.
type Check struct {
	Name string
	OK   bool
	Warn bool
	Text string
	Fix  string
}

// PrereqOptions are what the prerequisites look at.
type PrereqOptions struct {
	ConfigPath string
	Existing   *config.Config
	LoadErr    error
	SSH        SSHAnswer
	// Service is how the service will be installed (nil: it is not).
	Service *service.Options
}

// Prereqs looks at this machine: can the config be written, is there an
// old one, can the service be installed, how SSH will log in.
func Prereqs(o PrereqOptions) []Check {
	var cs []Check
	cfg := o.ConfigPath
	switch {
	case o.LoadErr != nil:
		cs = append(cs, Check{Name: "config", Text: fmt.Sprintf("%s: %v", cfg, o.LoadErr),
			Fix: "fix or move the file away, or pass --config with another path"})
	case o.Existing != nil && o.Existing.API.ProviderPubkey != "":
		cs = append(cs, Check{Name: "config", OK: true, Text: cfg + " exists: its answers are prefilled, and steps already done are skipped"})
	default:
		cs = append(cs, Check{Name: "config", OK: true, Text: cfg + " will be written"})
	}
	if dir, err := writableDir(filepath.Dir(cfg)); err != nil {
		cs = append(cs, Check{Name: "permissions", Text: fmt.Sprintf("cannot write %s: %v", dir, err),
			Fix: "run as root (sudo dc-agent), or pass --config with a path you can write"})
	}
	switch s := o.Service; {
	case s == nil:
	case s.Root != "":
		cs = append(cs, Check{Name: "service", OK: true, Text: "the service files go under " + s.Root + " (no systemctl)"})
	case s.User:
		cs = append(cs, Check{Name: "service", OK: true, Text: "the service goes into your systemd --user manager"})
	default:
		if _, err := exec.LookPath("systemctl"); err != nil {
			cs = append(cs, Check{Name: "service", Warn: true, Text: "systemctl not found: the service cannot be installed on this machine",
				Fix: "run dc-agent on a systemd host, or run 'dc-agent run' yourself after the setup"})
		} else if os.Geteuid() != 0 {
			cs = append(cs, Check{Name: "service", Warn: true, Text: "not root: installing the service will fail", Fix: "run sudo dc-agent"})
		} else {
			cs = append(cs, Check{Name: "service", OK: true, Text: "systemd found: the dc-agent service will be installed and started"})
		}
	}
	switch {
	case o.SSH.IdentityFile != "":
		cs = append(cs, Check{Name: "ssh", OK: true, Text: "SSH key " + o.SSH.IdentityFile})
	case o.SSH.PasswordFile != "":
		cs = append(cs, Check{Name: "ssh", OK: true, Text: "SSH password from " + o.SSH.PasswordFile})
	case os.Getenv("SSH_AUTH_SOCK") != "":
		cs = append(cs, Check{Name: "ssh", OK: true, Text: "SSH keys from ssh-agent"})
	default:
		if keys := DefaultIdentityFiles(); len(keys) > 0 {
			cs = append(cs, Check{Name: "ssh", OK: true, Text: "SSH key " + keys[0]})
		} else {
			cs = append(cs, Check{Name: "ssh", OK: true, Warn: true, Text: "no SSH key found: you will log in to the node with a password"})
		}
	}
	return cs
}

// Blocked reports whether a check failed.
func Blocked(checks []Check) bool {
	_, ok := failed(checks)
	return ok
}

// failed is the first check that blocks.
func failed(checks []Check) (Check, bool) {
	i := slices.IndexFunc(checks, func(c Check) bool { return !c.OK && !c.Warn })
	if i < 0 {
		return Check{}, false
	}
	return checks[i], true
}

// writableDir checks that dir (or its nearest existing parent, where it
// would be created) can be written.
func writableDir(dir string) (string, error) {
	for d := dir; ; d = filepath.Dir(d) {
		st, err := os.Stat(d)
		if errors.Is(err, fs.ErrNotExist) && d != filepath.Dir(d) {
			continue
		}
		if err != nil {
			return d, err
		}
		if !st.IsDir() {
			return d, errors.New("not a directory")
		}
		if err := unix.Access(d, unix.W_OK); err != nil {
			return d, errors.New("permission denied")
		}
		return d, nil
	}
}
