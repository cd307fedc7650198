package packaging

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/decent-stuff/dc-agent/internal/testutil"
)

// fakeBinary creates an executable at path; systemd-analyze verify checks
// that ExecStart= names one.
func fakeBinary(t *testing.T, path string) string {
	t.Helper()
	return testutil.WriteFile(t, path, "#!/bin/sh\nexit 0\n", 0o755)
}

func TestRenderUnitProduction(t *testing.T) {
	u, err := RenderUnit(UnitParams{Binary: "/usr/local/bin/dc-agent", ConfigPath: "/etc/dc-agent/dc-agent.toml", System: true, GraceSeconds: 300})
	if err != nil {
		t.Fatal(err)
	}
	s := string(u)
	for _, want := range []string{
		"Type=notify\n", "NotifyAccess=main\n", "WatchdogSec=60s\n", "Restart=on-failure\n",
		"StartLimitBurst=5\n", "TimeoutStopSec=330s\n", "User=dc-agent\n", "Group=dc-agent\n",
		"StateDirectory=dc-agent\n", "StateDirectoryMode=0700\n", "ConfigurationDirectory=dc-agent\n",
		"ConfigurationDirectoryMode=0750\n", "RuntimeDirectory=dc-agent\n", "RuntimeDirectoryMode=0750\n",
		"ProtectSystem=strict\n", "NoNewPrivileges=yes\n", "PrivateTmp=yes\n", "ProtectHome=yes\n",
		"RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6\n", "SystemCallFilter=@system-service\n",
		"UMask=0077\n", "After=network-online.target\n", "Wants=network-online.target\n",
		"ExecStart=/usr/local/bin/dc-agent --config /etc/dc-agent/dc-agent.toml run\n",
		"WantedBy=multi-user.target\n",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("unit lacks %q:\n%s", want, s)
		}
	}
	if strings.Contains(s, "{{") || strings.Contains(s, "<no value>") {
		t.Errorf("template residue in unit:\n%s", s)
	}
}

func TestRenderUnitUserVariantDropsUserAndSandbox(t *testing.T) {
	u, err := RenderUnit(UnitParams{Binary: "/opt/dc-agent", ConfigPath: "/tmp/x/dc-agent.toml", Watchdog: 1500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	s := string(u)
	for _, gone := range []string{"User=", "Group=", "ProtectSystem=", "SystemCallFilter=", "CapabilityBoundingSet="} {
		if strings.Contains(s, "\n"+gone) {
			t.Errorf("user variant contains %s:\n%s", gone, s)
		}
	}
	for _, want := range []string{"WatchdogSec=1500ms\n", "WantedBy=default.target\n", "Type=notify\n"} {
		if !strings.Contains(s, want) {
			t.Errorf("user variant lacks %q", want)
		}
	}
}

func TestRenderIsDeterministic(t *testing.T) {
	p := UnitParams{Binary: "/usr/bin/dc-agent", ConfigPath: DefaultConfig, System: true, Environment: []string{"A=1", "B=2"}}
	a, err := RenderUnit(p)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := RenderUnit(p)
	if !bytes.Equal(a, b) {
		t.Fatal("two renders of the same params differ")
	}
	p.Watchdog = 30 * time.Second
	c, _ := RenderUnit(p)
	if bytes.Equal(a, c) {
		t.Fatal("a different watchdog rendered the same unit")
	}
}

func TestValidateRejectsBadParams(t *testing.T) {
	ok := UnitParams{Binary: "/usr/bin/dc-agent", ConfigPath: DefaultConfig, System: true}
	cases := map[string]func(p *UnitParams){
		"relative binary":  func(p *UnitParams) { p.Binary = "bin/dc-agent" },
		"empty config":     func(p *UnitParams) { p.ConfigPath = "" },
		"newline in path":  func(p *UnitParams) { p.ConfigPath = "/etc/x\nExecStartPre=/bin/evil" },
		"bad user":         func(p *UnitParams) { p.User = "dc agent" },
		"dash user":        func(p *UnitParams) { p.User = "-root" },
		"bad unit name":    func(p *UnitParams) { p.Name = "dc/agent" },
		"short watchdog":   func(p *UnitParams) { p.Watchdog = 10 * time.Millisecond },
		"negative grace":   func(p *UnitParams) { p.GraceSeconds = -1 },
		"rw with space":    func(p *UnitParams) { p.ReadWritePaths = []string{"/var/lib/a b"} },
		"rw relative":      func(p *UnitParams) { p.ReadWritePaths = []string{"state"} },
		"env without =":    func(p *UnitParams) { p.Environment = []string{"NOVALUE"} },
		"env bad key":      func(p *UnitParams) { p.Environment = []string{"A-B=1"} },
		"env with newline": func(p *UnitParams) { p.Environment = []string{"A=1\nUser=root"} },
		"run arg newline":  func(p *UnitParams) { p.RunArgs = []string{"--x\nUser=root"} },
	}
	if err := ok.Validate(); err != nil {
		t.Fatalf("good params refused: %v", err)
	}
	for name, mut := range cases {
		p := ok
		mut(&p)
		if err := p.Validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
		if _, err := RenderUnit(p); err == nil {
			t.Errorf("%s: rendered", name)
		}
	}
}

func TestQuoteArg(t *testing.T) {
	for in, want := range map[string]string{
		"/usr/bin/dc-agent": "/usr/bin/dc-agent",
		"/opt/my agent/bin": `"/opt/my agent/bin"`,
		"/opt/100%/x":       "/opt/100%%/x",
		`/a"b`:              `"/a\"b"`,
		"/a$HOME":           "/a$$HOME",
		`K=a\b`:             `"K=a\\b"`,
	} {
		if got := quoteArg(in); got != want {
			t.Errorf("quoteArg(%q) = %s, want %s", in, got, want)
		}
	}
}

// verify runs `systemd-analyze verify` and requires empty stderr: it exits
// 0 even for values it ignores.
func verify(t *testing.T, env []string, args ...string) {
	t.Helper()
	sa := testutil.RequireBinary(t, "systemd-analyze")
	cmd := exec.Command(sa, append([]string{"verify"}, args...)...)
	var stderr, stdout bytes.Buffer
	cmd.Stderr, cmd.Stdout = &stderr, &stdout
	// No pager, no colors, no attempt to talk to a manager.
	cmd.Env = append(os.Environ(), "SYSTEMD_PAGER=", "SYSTEMD_COLORS=0", "SYSTEMD_LOG_LEVEL=notice")
	cmd.Env = append(cmd.Env, env...)
	err := cmd.Run()
	if err != nil || stderr.Len() > 0 {
		t.Fatalf("systemd-analyze verify %v: err=%v\nstderr:\n%s\nstdout:\n%s", args, err, stderr.String(), stdout.String())
	}
}

func TestSystemdAnalyzeVerify(t *testing.T) {
	dir := t.TempDir()
	// Spaces and a '%' exercise the quoting: a wrongly quoted path names a
	// file that does not exist and verify says so.
	bin := fakeBinary(t, filepath.Join(dir, "my bin", "dc-agent%1"))
	p := UnitParams{Binary: bin, ConfigPath: "/etc/dc-agent/dc-agent.toml", System: true, GraceSeconds: 600,
		ReadWritePaths: []string{"/srv/dc-agent"}, Environment: []string{"HTTPS_PROXY=http://proxy:3128", "NOTE=two words"},
		RunArgs: []string{"--log-format=json", "--log-level", "debug"}}
	units := filepath.Join(dir, "units")
	for name, f := range map[string]func(UnitParams) ([]byte, error){
		"dc-agent.service": RenderUnit, "dc-agent-upgrade.service": RenderUpgradeService, "dc-agent-upgrade.timer": RenderUpgradeTimer,
		"dc-agent-upgrade.path": RenderUpgradePath,
	} {
		b, err := f(p)
		if err != nil {
			t.Fatal(err)
		}
		testutil.WriteFile(t, filepath.Join(units, name), string(b), 0o644)
	}
	verify(t, nil, filepath.Join(units, "dc-agent.service"), filepath.Join(units, "dc-agent-upgrade.service"), filepath.Join(units, "dc-agent-upgrade.timer"),
		filepath.Join(units, "dc-agent-upgrade.path"))

	p.System = false
	b, err := RenderUnit(p)
	if err != nil {
		t.Fatal(err)
	}
	user := testutil.WriteFile(t, filepath.Join(dir, "user", "dc-agent.service"), string(b), 0o644)
	// The user manager needs a runtime directory even to verify.
	verify(t, []string{"XDG_RUNTIME_DIR=" + t.TempDir()}, "--user", user)
}

func TestSystemdAnalyzeVerifyCatchesBadUnit(t *testing.T) {
	// The verify helper must be able to fail: an ignored bad value prints
	// to stderr while the exit code stays 0.
	dir := t.TempDir()
	bin := fakeBinary(t, filepath.Join(dir, "dc-agent"))
	u, err := RenderUnit(UnitParams{Binary: bin, ConfigPath: DefaultConfig, System: true})
	if err != nil {
		t.Fatal(err)
	}
	bad := strings.Replace(string(u), "WatchdogSec=60s", "WatchdogSec=sixty", 1)
	path := testutil.WriteFile(t, filepath.Join(dir, "dc-agent.service"), bad, 0o644)
	sa := testutil.RequireBinary(t, "systemd-analyze")
	cmd := exec.Command(sa, "verify", path)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	_ = cmd.Run()
	if !strings.Contains(stderr.String(), "sixty") {
		t.Fatalf("systemd-analyze did not report the bad value; stderr: %q", stderr.String())
	}
}

func TestPackagedConfigs(t *testing.T) {
	if s := string(SysusersConf()); !strings.Contains(s, "u dc-agent ") {
		t.Errorf("sysusers.conf does not declare the dc-agent user:\n%s", s)
	}
	ts := string(TmpfilesConf())
	for _, want := range []string{"d /etc/dc-agent 0750 root dc-agent", "d /var/lib/dc-agent 0700 dc-agent dc-agent"} {
		if !strings.Contains(ts, want) {
			t.Errorf("tmpfiles.conf lacks %q", want)
		}
	}
	if !bytes.Contains(ExampleConfig(), []byte("[agent]")) {
		t.Error("example config lacks [agent]")
	}
}

// TestUnitSecurityExposure keeps the production unit's sandbox from
// eroding: systemd-analyze security rates it (0 best, 10 worst; 1.5 when
// written) and must stay at 2.0 ("OK") or better.
func TestUnitSecurityExposure(t *testing.T) {
	sa := testutil.RequireBinary(t, "systemd-analyze")
	dir := t.TempDir()
	u, err := RenderUnit(UnitParams{Binary: fakeBinary(t, filepath.Join(dir, "dc-agent")), ConfigPath: DefaultConfig, System: true})
	if err != nil {
		t.Fatal(err)
	}
	path := testutil.WriteFile(t, filepath.Join(dir, "dc-agent.service"), string(u), 0o644)
	out, err := exec.Command(sa, "security", "--offline=true", "--threshold=20", "--no-pager", path).CombinedOutput()
	last := strings.TrimSpace(string(out))
	if i := strings.LastIndex(last, "\n"); i >= 0 {
		last = last[i+1:]
	}
	if err != nil {
		t.Fatalf("exposure above 2.0: %v\n%s", err, out)
	}
	t.Log(last)
}

// [gateway] needs nftables (netlink, CAP_NET_ADMIN); without it the unit
// keeps both closed. The gateway variant must verify too.
func TestRenderUnitGateway(t *testing.T) {
	dir := t.TempDir()
	bin := fakeBinary(t, filepath.Join(dir, "dc-agent"))
	p := UnitParams{Binary: bin, ConfigPath: "/etc/dc-agent/dc-agent.toml", System: true, ReadWritePaths: []string{"/etc/caddy/sites"}}
	plain, err := RenderUnit(p)
	if err != nil {
		t.Fatal(err)
	}
	p.Gateway = true
	gw, err := RenderUnit(p)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		unit      string
		want, not []string
	}{
		{string(plain), []string{"RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6\n", "CapabilityBoundingSet=\n", "AmbientCapabilities=\n"}, []string{"AF_NETLINK", "CAP_NET_ADMIN"}},
		{string(gw), []string{"RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK\n", "CapabilityBoundingSet=CAP_NET_ADMIN\n", "AmbientCapabilities=CAP_NET_ADMIN\n", "ReadWritePaths=-/etc/caddy/sites\n"}, nil},
	} {
		for _, w := range c.want {
			if !strings.Contains(c.unit, w) {
				t.Errorf("unit lacks %q:\n%s", w, c.unit)
			}
		}
		for _, n := range c.not {
			if strings.Contains(c.unit, n) {
				t.Errorf("unit has %q:\n%s", n, c.unit)
			}
		}
	}
	verify(t, nil, testutil.WriteFile(t, filepath.Join(dir, "units", "dc-agent.service"), string(gw), 0o644))
}
