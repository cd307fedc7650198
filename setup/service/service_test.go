package service

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/decent-stuff/dc-agent/internal/testutil"
)

const testPubkey = "1111111111111111111111111111111111111111111111111111111111111111"

// writeConfig writes a valid config under root at /etc/dc-agent/dc-agent.toml
// with extra lines appended to [agent].
func writeConfig(t *testing.T, root string, agentLines ...string) string {
	t.Helper()
	cfg := `[api]
endpoint = "http://127.0.0.1:9"
provider_pubkey = "` + testPubkey + `"
agent_secret_key = "/etc/dc-agent/agent.key"

[agent]
` + strings.Join(agentLines, "\n") + `

[provisioner]
type = "manual"
`
	return testutil.WriteFile(t, filepath.Join(root, "etc/dc-agent/dc-agent.toml"), cfg, 0o644)
}

type recorder struct{ events []Event }

func (r *recorder) add(e Event) { r.events = append(r.events, e) }
func (r *recorder) changed() []string {
	var out []string
	for _, e := range r.events {
		if e.Changed {
			out = append(out, e.Step+": "+e.Detail)
		}
	}
	return out
}

func mode(t *testing.T, p string) os.FileMode {
	t.Helper()
	st, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return st.Mode().Perm()
}

func TestInstallRootWritesUnitAndIsIdempotent(t *testing.T) {
	root := t.TempDir()
	writeConfig(t, root, "shutdown_grace_seconds = 120")
	testutil.WriteFile(t, filepath.Join(root, "etc/dc-agent/agent.key"), strings.Repeat("ab", 32)+"\n", 0o644)
	testutil.WriteFile(t, filepath.Join(root, "etc/dc-agent/agent.pub"), testPubkey+"\n", 0o600)
	var rec recorder
	o := Options{Root: root, Binary: "/usr/bin/dc-agent", Progress: rec.add}
	res, err := Install(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Changed {
		t.Fatal("first install reported no change")
	}
	unitPath := filepath.Join(root, "etc/systemd/system/dc-agent.service")
	if res.UnitPath != unitPath {
		t.Fatalf("unit at %s, want %s", res.UnitPath, unitPath)
	}
	unit, err := os.ReadFile(unitPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"ExecStart=/usr/bin/dc-agent --config /etc/dc-agent/dc-agent.toml run\n", "TimeoutStopSec=150s\n", "User=dc-agent\n"} {
		if !strings.Contains(string(unit), want) {
			t.Errorf("unit lacks %q", want)
		}
	}
	for p, want := range map[string]os.FileMode{
		"etc/dc-agent": 0o750, "var/lib/dc-agent": 0o700, "etc/systemd/system/dc-agent.service": 0o644,
		"etc/dc-agent/agent.key": 0o600, "etc/dc-agent/dc-agent.toml": 0o640, "etc/dc-agent/agent.pub": 0o644,
	} {
		if got := mode(t, filepath.Join(root, p)); got != want {
			t.Errorf("%s: mode %04o, want %04o", p, got, want)
		}
	}
	st1, _ := os.Stat(unitPath)

	// Same inputs: nothing changes, the file is not even rewritten.
	rec = recorder{}
	o.Progress = rec.add
	res, err = Install(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if res.Changed || len(rec.changed()) > 0 {
		t.Fatalf("second install changed: %v", rec.changed())
	}
	st2, _ := os.Stat(unitPath)
	if !os.SameFile(st1, st2) || !st1.ModTime().Equal(st2.ModTime()) {
		t.Fatal("unchanged unit was rewritten")
	}

	// New inputs: the unit is updated.
	o.Watchdog = 20 * time.Second
	res, err = Install(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	unit2, _ := os.ReadFile(unitPath)
	if !res.Changed || !strings.Contains(string(unit2), "WatchdogSec=20s\n") {
		t.Fatalf("new watchdog not applied (changed=%v):\n%s", res.Changed, unit2)
	}
}

func TestInstallRootWithoutConfigUsesDefaults(t *testing.T) {
	root := t.TempDir()
	res, err := Install(context.Background(), Options{Root: root, Binary: "/usr/bin/dc-agent"})
	if err != nil {
		t.Fatal(err)
	}
	unit, _ := os.ReadFile(res.UnitPath)
	if !strings.Contains(string(unit), "TimeoutStopSec=330s\n") {
		t.Fatalf("default grace not used:\n%s", unit)
	}
}

func TestInstallRefusesInvalidConfig(t *testing.T) {
	root := t.TempDir()
	testutil.WriteFile(t, filepath.Join(root, "etc/dc-agent/dc-agent.toml"), "[api]\nendpoint = \"x\"\nbogus = 1\n", 0o600)
	_, err := Install(context.Background(), Options{Root: root, Binary: "/usr/bin/dc-agent"})
	if err == nil || !strings.Contains(err.Error(), "would not start") || !strings.Contains(err.Error(), "bogus") {
		t.Fatalf("invalid config: err = %v", err)
	}
	if _, err := os.Stat(filepath.Join(root, "etc/systemd/system/dc-agent.service")); err == nil {
		t.Fatal("a unit was written for an invalid config")
	}
}

func TestInstallRefusesBadOptions(t *testing.T) {
	root := t.TempDir()
	for name, o := range map[string]Options{
		"user and root":   {Root: root, User: true, Binary: "/usr/bin/dc-agent"},
		"relative binary": {Root: root, Binary: "dc-agent"},
		"env newline":     {Root: root, Binary: "/usr/bin/dc-agent", Env: []string{"A=1\nUser=root"}},
	} {
		if _, err := Install(context.Background(), o); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestAutoUpdateTimerFollowsConfig(t *testing.T) {
	root := t.TempDir()
	writeConfig(t, root, "auto_update = true", `state_dir = "/srv/dc-state"`)
	o := Options{Root: root, Binary: "/usr/local/bin/dc-agent"}
	if _, err := Install(context.Background(), o); err != nil {
		t.Fatal(err)
	}
	timer := filepath.Join(root, "etc/systemd/system/dc-agent-upgrade.timer")
	svc := filepath.Join(root, "etc/systemd/system/dc-agent-upgrade.service")
	watch := filepath.Join(root, "etc/systemd/system/dc-agent-upgrade.path")
	b, err := os.ReadFile(svc)
	if err != nil {
		t.Fatal("auto_update = true wrote no upgrade service")
	}
	if !strings.Contains(string(b), "ExecStart=/usr/local/bin/dc-agent --config /etc/dc-agent/dc-agent.toml upgrade --auto\n") {
		t.Fatalf("upgrade service:\n%s", b)
	}
	if _, err := os.Stat(timer); err != nil {
		t.Fatal("auto_update = true wrote no timer")
	}
	// The path unit starts the upgrade at once when the agent leaves the
	// version the API asked for in its state directory.
	if b, err := os.ReadFile(watch); err != nil || !strings.Contains(string(b), "PathChanged=/srv/dc-state/upgrade-request\n") ||
		!strings.Contains(string(b), "Unit=dc-agent-upgrade.service\n") {
		t.Fatalf("upgrade path unit (%v):\n%s", err, b)
	}
	writeConfig(t, root, "auto_update = false")
	if _, err := Install(context.Background(), o); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{timer, svc, watch} {
		if _, err := os.Stat(p); err == nil {
			t.Errorf("%s kept after auto_update was turned off", p)
		}
	}
}

func TestUninstallRootKeepsConfigUnlessPurge(t *testing.T) {
	root := t.TempDir()
	writeConfig(t, root)
	o := Options{Root: root, Binary: "/usr/bin/dc-agent"}
	if _, err := Install(context.Background(), o); err != nil {
		t.Fatal(err)
	}
	changed, err := Uninstall(context.Background(), o)
	if err != nil || !changed {
		t.Fatalf("uninstall: changed=%v err=%v", changed, err)
	}
	if _, err := os.Stat(filepath.Join(root, "etc/systemd/system/dc-agent.service")); err == nil {
		t.Fatal("unit kept")
	}
	if _, err := os.Stat(filepath.Join(root, "etc/dc-agent/dc-agent.toml")); err != nil {
		t.Fatal("config removed without --purge")
	}
	if changed, err := Uninstall(context.Background(), o); err != nil || changed {
		t.Fatalf("second uninstall: changed=%v err=%v", changed, err)
	}
	o.Purge = true
	if _, err := Uninstall(context.Background(), o); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"etc/dc-agent", "var/lib/dc-agent"} {
		if _, err := os.Stat(filepath.Join(root, d)); err == nil {
			t.Errorf("--purge kept %s", d)
		}
	}
	if _, err := os.Stat(filepath.Join(root, "etc")); err != nil {
		t.Fatal("--purge removed /etc")
	}
}

func TestPurgeNeverRemovesASharedDirectory(t *testing.T) {
	// A config directly in /etc must not take /etc with it.
	root := t.TempDir()
	cfg := writeConfig(t, root, `state_dir = "/srv"`)
	if err := os.Rename(cfg, filepath.Join(root, "etc/dc-agent.toml")); err != nil {
		t.Fatal(err)
	}
	testutil.WriteFile(t, filepath.Join(root, "etc/hostname"), "h\n", 0o644)
	testutil.WriteFile(t, filepath.Join(root, "srv/other"), "x\n", 0o644)
	o := Options{Root: root, Binary: "/usr/bin/dc-agent", ConfigPath: "/etc/dc-agent.toml", Purge: true}
	if _, err := Install(context.Background(), o); err != nil {
		t.Fatal(err)
	}
	if _, err := Uninstall(context.Background(), o); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"etc/hostname", "srv/other"} {
		if _, err := os.Stat(filepath.Join(root, p)); err != nil {
			t.Errorf("purge removed %s", p)
		}
	}
}

func TestEnsureAccountWithRealUseradd(t *testing.T) {
	useradd := testutil.RequireBinary(t, "useradd")
	userdel := testutil.RequireBinary(t, "userdel")
	if os.Geteuid() != 0 {
		testutil.Unavailable(t, "useradd needs root")
	}
	// A private copy of the user database: useradd --prefix works on it.
	db := t.TempDir()
	for _, f := range []string{"passwd", "group", "shadow", "gshadow", "login.defs"} {
		b, err := os.ReadFile("/etc/" + f)
		if err != nil {
			if f == "login.defs" || f == "gshadow" {
				continue
			}
			t.Fatal(err)
		}
		testutil.WriteFile(t, filepath.Join(db, "etc", f), string(b), 0o600)
	}
	a, created, err := ensureAccount(context.Background(), useradd, db, "dc-agent-test", "/var/lib/dc-agent-test")
	if err != nil {
		t.Fatal(err)
	}
	if !created || a.uid <= 0 || a.uid >= 1000 {
		t.Fatalf("account %+v created=%v: want a new system uid", a, created)
	}
	passwd, _ := os.ReadFile(filepath.Join(db, "etc/passwd"))
	if !strings.Contains(string(passwd), "dc-agent-test:x:") || !strings.Contains(string(passwd), ":/var/lib/dc-agent-test:") {
		t.Fatalf("passwd lacks the user:\n%s", passwd)
	}
	if host, _ := os.ReadFile("/etc/passwd"); strings.Contains(string(host), "dc-agent-test") {
		t.Fatal("the host's /etc/passwd was changed")
	}
	b, created, err := ensureAccount(context.Background(), useradd, db, "dc-agent-test", "/var/lib/dc-agent-test")
	if err != nil || created || b != a {
		t.Fatalf("second ensure: %+v created=%v err=%v", b, created, err)
	}
	removed, err := removeAccount(context.Background(), userdel, db, "dc-agent-test")
	if err != nil || !removed {
		t.Fatalf("remove: %v %v", removed, err)
	}
	if _, found, _ := lookupAccount(db, "dc-agent-test"); found {
		t.Fatal("user still there after removeAccount")
	}
}

func TestSecureConfigFilesSetsOwnerAndModes(t *testing.T) {
	if os.Geteuid() != 0 {
		testutil.Unavailable(t, "chown to another uid needs root")
	}
	dir := t.TempDir()
	key := testutil.WriteFile(t, filepath.Join(dir, "agent.key"), "k\n", 0o644)
	pub := testutil.WriteFile(t, filepath.Join(dir, "agent.pub"), "p\n", 0o600)
	cfg := testutil.WriteFile(t, filepath.Join(dir, "dc-agent.toml"), "c\n", 0o600)
	if err := os.Chown(cfg, 4242, 4343); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	own := &owner{uid: 4242, gid: 4343}
	cf := configFile{name: "dc-agent.toml", mode: 0o640, own: &owner{uid: 0, gid: 4343}}
	changed, err := secureConfigFiles(dir, cf, own)
	if err != nil || len(changed) != 3 {
		t.Fatalf("changed %v, err %v", changed, err)
	}
	for p, want := range map[string]struct {
		mode     os.FileMode
		uid, gid uint32
	}{key: {0o600, 4242, 4343}, pub: {0o644, 4242, 4343}, cfg: {0o640, 0, 4343}} {
		st, _ := os.Stat(p)
		sys := st.Sys().(*syscall.Stat_t)
		if st.Mode().Perm() != want.mode || sys.Uid != want.uid || sys.Gid != want.gid {
			t.Errorf("%s: mode %04o owner %d:%d, want %04o %d:%d", p, st.Mode().Perm(), sys.Uid, sys.Gid, want.mode, want.uid, want.gid)
		}
	}
	if changed, _ := secureConfigFiles(dir, cf, own); len(changed) != 0 {
		t.Fatalf("second pass changed %v", changed)
	}
}

func TestParsePasswd(t *testing.T) {
	db := "# comment\nroot:x:0:0:root:/root:/bin/bash\n\ndc-agent:x:998:997::/var/lib/dc-agent:/usr/sbin/nologin\nbroken:x:abc:1::/:/bin/sh\n"
	uid, gid, found, err := parsePasswd([]byte(db), "dc-agent")
	if err != nil || !found || uid != 998 || gid != 997 {
		t.Fatalf("dc-agent: %d %d %v %v", uid, gid, found, err)
	}
	if _, _, found, err := parsePasswd([]byte(db), "nobody"); found || err != nil {
		t.Fatalf("nobody: found=%v err=%v", found, err)
	}
	if _, _, _, err := parsePasswd([]byte(db), "broken"); err == nil {
		t.Fatal("malformed uid accepted")
	}
}

func FuzzParsePasswd(f *testing.F) {
	f.Add([]byte("dc-agent:x:998:997::/var/lib/dc-agent:/usr/sbin/nologin\n"), "dc-agent")
	f.Add([]byte("a:b\n::::\n"), "")
	f.Fuzz(func(t *testing.T, data []byte, name string) {
		uid, gid, found, err := parsePasswd(data, name)
		if err == nil && found && (uid < 0 || gid < 0) {
			t.Fatalf("negative ids %d %d", uid, gid)
		}
	})
}

func FuzzParseShow(f *testing.F) {
	f.Add("ActiveState=active\nSubState=running\nStatusText=online · 3 active\n")
	f.Add("=x\nA==b\n\n")
	f.Fuzz(func(t *testing.T, out string) {
		m := parseShow(out)
		for k := range m {
			if k == "" || strings.Contains(k, "\n") {
				t.Fatalf("bad key %q", k)
			}
		}
	})
}

// TestInstallUserReportsWhyNotActive installs a unit whose binary exits at
// once into a real systemd --user: install must fail and say why.
func TestInstallUserReportsWhyNotActive(t *testing.T) {
	m := testutil.StartUserManager(t, "")
	t.Setenv("XDG_CONFIG_HOME", filepath.Join(m.Root, "etc"))
	t.Setenv("XDG_RUNTIME_DIR", filepath.Join(m.Root, "run"))
	t.Setenv("XDG_STATE_HOME", filepath.Join(m.Root, "var/lib"))
	bin := testutil.WriteFile(t, filepath.Join(m.Root, "bin/dc-agent"), "#!/bin/sh\necho 'cannot reach the provisioner' >&2\nexit 3\n", 0o755)
	cfg := writeConfig(t, m.Root, `state_dir = "`+filepath.Join(m.Root, "var/lib/dc-agent")+`"`)
	_, err := Install(context.Background(), Options{User: true, Binary: bin, ConfigPath: cfg, Timeout: 20 * time.Second})
	if err == nil {
		t.Fatal("install of a unit that exits at once succeeded")
	}
	t.Logf("install error, as a person sees it:\n%v", err)
	for _, want := range []string{"failed to start", "exit status 3", "systemctl --user status dc-agent.service"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	if _, err := Uninstall(context.Background(), Options{User: true, Binary: bin, ConfigPath: cfg}); err != nil {
		t.Fatal(err)
	}
	if out, _ := exec.Command("systemctl", "--user", "show", "-p", "LoadState", "dc-agent.service").Output(); !strings.Contains(string(out), "not-found") {
		t.Fatalf("unit still known after uninstall: %s", out)
	}
}

// With [gateway] the unit may speak netlink with CAP_NET_ADMIN and write
// the Caddy sites and the port allocations; without, it may not.
func TestInstallGatewayUnit(t *testing.T) {
	root := t.TempDir()
	cfg := writeConfig(t, root)
	testutil.WriteFile(t, filepath.Join(root, "etc/dc-agent/agent.key"), strings.Repeat("ab", 32)+"\n", 0o600)
	o := Options{Root: root, Binary: "/usr/bin/dc-agent"}
	if _, err := Install(context.Background(), o); err != nil {
		t.Fatal(err)
	}
	unitPath := filepath.Join(root, "etc/systemd/system/dc-agent.service")
	unit, _ := os.ReadFile(unitPath)
	if strings.Contains(string(unit), "CAP_NET_ADMIN") || strings.Contains(string(unit), "AF_NETLINK") {
		t.Fatalf("unit without [gateway] grants netfilter:\n%s", unit)
	}
	b, _ := os.ReadFile(cfg)
	gw := "\n[gateway]\ndc_id = \"dc-lk\"\npublic_ip = \"198.51.100.7\"\ncaddy_sites_dir = \"/srv/caddy/sites\"\nport_allocations_path = \"/srv/dc-gw/ports.json\"\n"
	testutil.WriteFile(t, cfg, string(b)+gw, 0o640)
	if _, err := Install(context.Background(), o); err != nil {
		t.Fatal(err)
	}
	unit, _ = os.ReadFile(unitPath)
	for _, want := range []string{"AmbientCapabilities=CAP_NET_ADMIN\n", "CapabilityBoundingSet=CAP_NET_ADMIN\n",
		"RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK\n", "ReadWritePaths=-/srv/caddy/sites\n", "ReadWritePaths=-/srv/dc-gw\n"} {
		if !strings.Contains(string(unit), want) {
			t.Errorf("gateway unit lacks %q:\n%s", want, unit)
		}
	}
	// The directories the service writes exist (owned by its account on
	// a real install; --root leaves owners alone).
	for dir, mode := range map[string]os.FileMode{"srv/caddy/sites": 0o755, "srv/dc-gw": 0o700} {
		if st, err := os.Stat(filepath.Join(root, dir)); err != nil || !st.IsDir() || st.Mode().Perm() != mode {
			t.Errorf("%s: %v %v, want a directory with mode %04o", dir, err, st, mode)
		}
	}
}
