package pvecli

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/decent-stuff/dc-agent/internal/sim/pve"
)

type node struct {
	t   *testing.T
	dir string
}

func newNode(t *testing.T, version string) *node {
	t.Helper()
	dir := t.TempDir()
	timing := pve.FastTiming()
	if _, err := pve.Create(dir, pve.InitOptions{Version: version, Timing: &timing}); err != nil {
		t.Fatal(err)
	}
	return &node{t: t, dir: dir}
}

// run is one tool invocation; it returns stdout, stderr and the status.
func (n *node) run(args ...string) (string, string, int) {
	var o, e bytes.Buffer
	code := Main(args, Env{Stdout: &o, Stderr: &e, Stdin: strings.NewReader(""), StateDir: n.dir})
	return o.String(), e.String(), code
}

func (n *node) ok(args ...string) string {
	n.t.Helper()
	o, e, code := n.run(args...)
	if code != 0 {
		n.t.Fatalf("%v: exit %d\n%s%s", args, code, o, e)
	}
	return o
}

func (n *node) fails(want string, args ...string) {
	n.t.Helper()
	o, e, code := n.run(args...)
	if code == 0 || !strings.Contains(e, want) {
		n.t.Fatalf("%v: want a failure with %q, got exit %d\n%s%s", args, want, code, o, e)
	}
}

func fakeImage(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "img.qcow2")
	b := make([]byte, 4096)
	copy(b, "QFI\xfb")
	b[31] = 0x40 // 16 KiB virtual size... enough for the header check
	b[27] = 0x01
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestPrivilegeNamesFollowTheVersion(t *testing.T) {
	n9 := newNode(t, "9.1.1")
	n9.fails("create role failed: invalid privilege 'VM.Monitor'", "pveum", "role", "add", "R", "--privs", "VM.Audit,VM.Monitor")
	n9.ok("pveum", "role", "add", "R", "--privs", "VM.Audit,VM.GuestAgent.Audit")
	n8 := newNode(t, "8.4.1")
	n8.fails("invalid privilege 'VM.GuestAgent.Audit'", "pveum", "role", "add", "R", "--privs", "VM.GuestAgent.Audit")
	n8.ok("pveum", "role", "add", "R", "--privs", "VM.Audit,VM.Monitor")
	var roles []map[string]any
	json.Unmarshal([]byte(n8.ok("pveum", "role", "list", "--output-format", "json")), &roles)
	found := false
	for _, r := range roles {
		if r["roleid"] == "R" && r["privs"] == "VM.Audit,VM.Monitor" && r["special"] == float64(0) {
			found = true
		}
	}
	if !found {
		t.Fatalf("role list: %v", roles)
	}
}

func TestQMBuildsATemplateAndRefusesWhatPVERefuses(t *testing.T) {
	n := newNode(t, "9.1.1")
	img := fakeImage(t)
	n.fails("unknown command 'qm frob'", "qm", "frob")
	n.fails("vmid: type check ('integer') failed - got 'abc'", "qm", "create", "abc")
	n.fails("Option name requires an argument", "qm", "create", "9000", "--name")
	n.fails("bogus: property is not defined in schema", "qm", "create", "9000", "--bogus", "1")
	n.fails("name: invalid format", "qm", "create", "9000", "--name", "a b")
	n.ok("qm", "create", "9000", "--name", "tpl", "--net0", "virtio,bridge=vmbr0", "--scsihw", "virtio-scsi-pci", "--tags", "a;b")
	n.fails("VM 9000 already exists", "qm", "create", "9000")
	n.ok("virt-customize", "-a", img, "--install", "qemu-guest-agent", "--truncate", "/etc/machine-id")
	out := n.ok("qm", "set", "9000", "--scsi0", "local-lvm:0,import-from="+img)
	if !strings.Contains(out, "scsi0: successfully created disk 'local-lvm:vm-9000-disk-0") {
		t.Fatalf("qm set import: %s", out)
	}
	n.fails("'import-from' requires special syntax", "qm", "set", "9000", "--scsi1", "local-lvm:vm-9000-disk-0,import-from="+img)
	n.ok("qm", "set", "9000", "--ide2", "local-lvm:cloudinit")
	n.ok("qm", "template", "9000")
	n.fails("you can't convert a template to a template", "qm", "template", "9000")
	if conf := n.ok("qm", "config", "9000"); !strings.Contains(conf, "template: 1") || !strings.Contains(conf, "scsi0: local-lvm:base-9000-disk-0") {
		t.Fatalf("config: %s", conf)
	}
	var res []map[string]any
	if err := json.Unmarshal([]byte(n.ok("pvesh", "get", "/cluster/resources", "--type", "vm", "--output-format", "json")), &res); err != nil || len(res) != 1 || res[0]["template"] != float64(1) || res[0]["tags"] != "a;b" {
		t.Fatalf("resources: %v %v", res, err)
	}
	// The imported disk remembers what virt-customize did to its image.
	st, _ := pve.Open(n.dir)
	st.View(func(s *pve.State) error {
		v := s.Volumes["local-lvm:base-9000-disk-0"]
		if v == nil || v.Origin == nil || strings.Join(v.Origin.Customizations, "|") != "install qemu-guest-agent|truncate /etc/machine-id" {
			t.Errorf("origin: %+v", v)
		}
		return nil
	})
	// A clone that runs cannot be destroyed.
	n.ok("qm", "clone", "9000", "101", "--name", "vm1", "--full")
	n.ok("qm", "start", "101")
	n.fails("VM 101 is running - destroy failed", "qm", "destroy", "101")
	n.ok("qm", "stop", "101")
	n.ok("qm", "destroy", "101", "--purge")
	if list := n.ok("qm", "list"); strings.Contains(list, " 101 ") || !strings.Contains(list, "9000 tpl") {
		t.Fatalf("list: %s", list)
	}
}

func TestPVEUMTokenAndPermissions(t *testing.T) {
	n := newNode(t, "9.1.1")
	n.ok("pveum", "user", "add", "dc@pve")
	n.fails("create user failed: user 'dc@pve' already exists", "pveum", "user", "add", "dc@pve")
	n.fails("Unknown option: privs", "pveum", "user", "add", "x@pve", "--privs", "a")
	var tok struct {
		ID    string         `json:"full-tokenid"`
		Info  map[string]any `json:"info"`
		Value string         `json:"value"`
	}
	if err := json.Unmarshal([]byte(n.ok("pveum", "user", "token", "add", "dc@pve", "tk", "--output-format", "json")), &tok); err != nil ||
		tok.ID != "dc@pve!tk" || tok.Value == "" || tok.Info["privsep"] != float64(1) {
		t.Fatalf("token add: %+v %v", tok, err)
	}
	n.ok("pveum", "pool", "add", "p")
	n.ok("pveum", "acl", "modify", "/pool/p", "--roles", "PVEVMAdmin", "--users", "dc@pve")
	// privsep: the token has nothing until it is granted too.
	var perms map[string]map[string]any
	json.Unmarshal([]byte(n.ok("pveum", "user", "token", "permissions", "dc@pve", "tk", "--path", "/pool/p", "--output-format", "json")), &perms)
	if len(perms["/pool/p"]) != 0 {
		t.Fatalf("privsep token has user rights: %v", perms)
	}
	n.ok("pveum", "acl", "modify", "/pool/p", "--roles", "PVEVMAdmin", "--tokens", "dc@pve!tk")
	json.Unmarshal([]byte(n.ok("pveum", "user", "token", "permissions", "dc@pve", "tk", "--path", "/pool/p", "--output-format", "json")), &perms)
	if perms["/pool/p"]["VM.Allocate"] != float64(1) {
		t.Fatalf("granted token: %v", perms)
	}
	n.ok("pveum", "acl", "delete", "/pool/p", "--roles", "PVEVMAdmin", "--tokens", "dc@pve!tk")
	n.ok("pveum", "user", "token", "remove", "dc@pve", "tk")
	n.fails("no such token", "pveum", "user", "token", "permissions", "dc@pve", "tk")
}

func TestFaultsAndVersion(t *testing.T) {
	n := newNode(t, "8.4.1")
	if v := n.ok("pveversion"); !strings.HasPrefix(v, "pve-manager/8.4.1/") {
		t.Fatalf("pveversion: %q", v)
	}
	if err := WriteFaults(n.dir, Faults{Rules: []FaultRule{{Match: []string{"qm", "template"}, Action: "fail", Message: "disk full", Count: 1}}}); err != nil {
		t.Fatal(err)
	}
	n.fails("disk full", "qm", "template", "100")
	n.fails("does not exist", "qm", "template", "100") // the rule fired once
	if _, e, code := n.run("virt-customize", "-a", "/nonexistent"); code != 1 || !strings.Contains(e, "No such file") {
		t.Fatalf("virt-customize missing file: %d %s", code, e)
	}
	if _, e, code := n.run("virt-customize", "--frobnicate"); code != 1 || !strings.Contains(e, "unrecognized option") {
		t.Fatalf("virt-customize bad option: %d %s", code, e)
	}
	var e bytes.Buffer
	if code := Main([]string{"qm", "list"}, Env{Stdout: &bytes.Buffer{}, Stderr: &e}); code != exitErr || !strings.Contains(e.String(), EnvState+" is not set") {
		t.Fatalf("no state dir: %d %s", code, e.String())
	}
}

// TestCaddyAndSystemctl: the node's Caddy lacks the acmedns module until
// add-package added it (once; other packages fail), and systemctl keeps
// caddy.service's state in the node state.
func TestCaddyAndSystemctl(t *testing.T) {
	n := newNode(t, "9.1.1")
	if out := n.ok("caddy", "list-modules"); strings.Contains(out, "dns.providers.acmedns") || !strings.Contains(out, "\n  Non-standard modules: 0\n") {
		t.Fatalf("list-modules before add-package:\n%s", out)
	}
	n.fails("not a registered Caddy module package path", "caddy", "add-package", "github.com/caddy-dns/cloudflare")
	n.ok("caddy", "add-package", "github.com/caddy-dns/acmedns")
	n.fails("package is already added", "caddy", "add-package", "github.com/caddy-dns/acmedns")
	if out := n.ok("caddy", "list-modules"); !strings.Contains(out, "\ndns.providers.acmedns\n\n  Non-standard modules: 1\n") {
		t.Fatalf("list-modules after add-package:\n%s", out)
	}

	if o, _, code := n.run("systemctl", "is-active", "caddy"); o != "inactive\n" || code != 3 {
		t.Fatalf("is-active before start: %q %d", o, code)
	}
	if o, _, code := n.run("systemctl", "is-enabled", "caddy"); o != "disabled\n" || code != 1 {
		t.Fatalf("is-enabled before enable: %q %d", o, code)
	}
	n.fails("does not exist", "systemctl", "enable", "nginx")
	n.ok("systemctl", "enable", "caddy")
	n.ok("systemctl", "daemon-reload")
	n.ok("systemctl", "restart", "caddy.service")
	if o, _, code := n.run("systemctl", "is-active", "caddy"); o != "active\n" || code != 0 {
		t.Fatalf("is-active after restart: %q %d", o, code)
	}
	if o := n.ok("systemctl", "show", "-P", "FragmentPath", "caddy"); o != filepath.Join(n.dir, "systemd", "system", "caddy.service")+"\n" {
		t.Fatalf("FragmentPath %q", o)
	}
	st, err := pve.Open(n.dir)
	if err != nil {
		t.Fatal(err)
	}
	_ = st.View(func(s *pve.State) error {
		for _, nd := range s.Nodes {
			u := nd.Units["caddy.service"]
			if u == nil || !u.Enabled || !u.Active || u.Restarts != 1 || nd.DaemonReloads != 1 || len(nd.Units) != 1 {
				t.Errorf("node state: units %v, %d daemon-reloads", nd.Units, nd.DaemonReloads)
			}
		}
		return nil
	})
}
