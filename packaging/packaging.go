// Package packaging holds the files that ship with dc-agent outside the
// binary — the systemd unit templates, the sysusers.d and tmpfiles.d
// configs, the example config — embedded so that `dc-agent service install`
// and the deb/rpm packages of `make release` render the very same unit.
package packaging

import (
	"bytes"
	"embed"
	"fmt"
	"path/filepath"
	"strings"
	"text/template"
	"time"
)

//go:embed dc-agent.service dc-agent-upgrade.service dc-agent-upgrade.timer dc-agent-upgrade.path
var templates embed.FS

var (
	//go:embed sysusers.conf
	sysusersConf []byte
	//go:embed tmpfiles.conf
	tmpfilesConf []byte
	//go:embed dc-agent.toml.example
	exampleConfig []byte
)

// Defaults of the rendered unit.
const (
	DefaultUnitName = "dc-agent"
	DefaultUser     = "dc-agent"
	DefaultBinary   = "/usr/local/bin/dc-agent"
	DefaultConfig   = "/etc/dc-agent/dc-agent.toml"
	// DefaultWatchdog is WatchdogSec=: how long a hung agent loop goes
	// unnoticed before systemd restarts the agent.
	DefaultWatchdog = 60 * time.Second
	// DefaultRestartDelay is RestartSec=.
	DefaultRestartDelay = 5 * time.Second
	// UpgradeRequestFile is the file in the agent's state directory where
	// the running agent leaves the version the API asked for
	// (setup/upgrade); the upgrade path unit watches it.
	UpgradeRequestFile = "upgrade-request"
	// StopMargin is added to agent.shutdown_grace_seconds for
	// TimeoutStopSec=: the grace bounds the provisions, the margin covers
	// reporting their results and closing down.
	StopMargin = 30 * time.Second
)

// UnitParams are the inputs of the unit templates. The zero value of each
// optional field means its default.
type UnitParams struct {
	// Name is the unit name without ".service" (default dc-agent).
	Name string
	// Binary is the absolute path of the dc-agent executable.
	Binary string
	// ConfigPath is the absolute path of dc-agent.toml.
	ConfigPath string
	// System renders the production unit for the system manager (User=,
	// the sandbox). False renders the variant for `systemd --user`, which
	// cannot switch users and runs without the sandbox; it is meant for
	// tests and development only.
	System bool
	// User is the service account (System only; default dc-agent).
	User string
	// Watchdog is WatchdogSec= (default DefaultWatchdog).
	Watchdog time.Duration
	// RestartDelay is RestartSec= (default DefaultRestartDelay).
	RestartDelay time.Duration
	// GraceSeconds is agent.shutdown_grace_seconds; TimeoutStopSec= is it
	// plus StopMargin.
	GraceSeconds int
	// ReadWritePaths are writable paths beyond the state and runtime
	// directories (e.g. a state_dir outside /var/lib/dc-agent).
	ReadWritePaths []string
	// Environment are KEY=VALUE pairs for Environment= (never secrets:
	// unit files are world-readable).
	Environment []string
	// RunArgs are extra arguments of `dc-agent run` (e.g. --log-format=json).
	RunArgs []string
	// Gateway grants what [gateway] needs (System only): CAP_NET_ADMIN and
	// netlink sockets for nftables. Its directories go in ReadWritePaths.
	Gateway bool
	// StateDir is agent.state_dir (default /var/lib/<Name>): the upgrade
	// path unit watches its UpgradeRequestFile.
	StateDir string
}

func (p UnitParams) withDefaults() UnitParams {
	if p.Name == "" {
		p.Name = DefaultUnitName
	}
	if p.User == "" {
		p.User = DefaultUser
	}
	if p.Watchdog == 0 {
		p.Watchdog = DefaultWatchdog
	}
	if p.RestartDelay == 0 {
		p.RestartDelay = DefaultRestartDelay
	}
	if p.StateDir == "" {
		p.StateDir = "/var/lib/" + p.Name
	}
	return p
}

// Validate reports the first parameter that would make a broken or unsafe
// unit.
func (p UnitParams) Validate() error {
	p = p.withDefaults()
	if !validName(p.Name) {
		return fmt.Errorf("unit name %q: use letters, digits, '-', '_' and '.' only", p.Name)
	}
	if !validName(p.User) || strings.HasPrefix(p.User, "-") {
		return fmt.Errorf("service user %q: use letters, digits, '-', '_' and '.' only", p.User)
	}
	for what, v := range map[string]string{"binary": p.Binary, "config": p.ConfigPath} {
		if v == "" {
			return fmt.Errorf("the %s path is empty", what)
		}
		if !filepath.IsAbs(v) {
			return fmt.Errorf("the %s path %q must be absolute (systemd runs units from /)", what, v)
		}
		if hasControl(v) {
			return fmt.Errorf("the %s path %q contains a control character", what, v)
		}
	}
	if p.Watchdog < time.Second || p.Watchdog%time.Millisecond != 0 {
		return fmt.Errorf("watchdog %s: use at least 1s, in whole milliseconds", p.Watchdog)
	}
	if p.RestartDelay < 0 {
		return fmt.Errorf("restart delay %s must not be negative", p.RestartDelay)
	}
	if p.GraceSeconds < 0 {
		return fmt.Errorf("shutdown grace %ds must not be negative", p.GraceSeconds)
	}
	if !filepath.IsAbs(p.StateDir) || hasControl(p.StateDir) || strings.ContainsAny(p.StateDir, " \t\"'\\") {
		return fmt.Errorf("state directory %q must be absolute, without spaces or quotes", p.StateDir)
	}
	for _, rw := range p.ReadWritePaths {
		if !filepath.IsAbs(rw) || hasControl(rw) || strings.ContainsAny(rw, " \t\"'\\") {
			return fmt.Errorf("writable path %q must be absolute, without spaces or quotes", rw)
		}
	}
	for _, a := range p.RunArgs {
		if hasControl(a) {
			return fmt.Errorf("run argument %q contains a control character", a)
		}
	}
	for _, kv := range p.Environment {
		k, _, ok := strings.Cut(kv, "=")
		if !ok || !validEnvName(k) {
			return fmt.Errorf("environment %q: use KEY=VALUE with KEY of letters, digits and '_'", kv)
		}
		if hasControl(kv) {
			return fmt.Errorf("environment %q contains a control character", k)
		}
	}
	return nil
}

// unitData is what the templates see.
type unitData struct {
	UnitParams
	ExecStart      string
	UpgradeExec    string
	WatchdogSec    string
	RestartSec     string
	TimeoutStopSec string
	BinaryDir      string
	UpgradeRequest string
}

func (p UnitParams) data() (unitData, error) {
	if err := p.Validate(); err != nil {
		return unitData{}, err
	}
	p = p.withDefaults()
	env := make([]string, len(p.Environment))
	for i, kv := range p.Environment {
		env[i] = quoteArg(kv)
	}
	p.Environment = env
	rw := make([]string, len(p.ReadWritePaths))
	for i, path := range p.ReadWritePaths {
		// "-": a path that does not exist yet is not an error.
		rw[i] = "-" + escapeSpecifiers(path)
	}
	p.ReadWritePaths = rw
	return unitData{
		UnitParams:     p,
		ExecStart:      execStart(p),
		WatchdogSec:    systemdDuration(p.Watchdog),
		RestartSec:     systemdDuration(p.RestartDelay),
		TimeoutStopSec: systemdDuration(time.Duration(p.GraceSeconds)*time.Second + StopMargin),
		UpgradeExec:    strings.Join([]string{quoteArg(p.Binary), "--config", quoteArg(p.ConfigPath), "upgrade", "--auto"}, " "),
		BinaryDir:      quotePath(filepath.Dir(p.Binary)),
		UpgradeRequest: escapeSpecifiers(filepath.Join(p.StateDir, UpgradeRequestFile)),
	}, nil
}

func execStart(p UnitParams) string {
	words := []string{quoteArg(p.Binary), "--config", quoteArg(p.ConfigPath), "run"}
	for _, a := range p.RunArgs {
		words = append(words, quoteArg(a))
	}
	return strings.Join(words, " ")
}

// RenderUnit renders dc-agent.service.
func RenderUnit(p UnitParams) ([]byte, error) { return render("dc-agent.service", p) }

// RenderUpgradeService renders dc-agent-upgrade.service, which the
// auto-update timer starts.
func RenderUpgradeService(p UnitParams) ([]byte, error) {
	return render("dc-agent-upgrade.service", p)
}

// RenderUpgradeTimer renders dc-agent-upgrade.timer.
func RenderUpgradeTimer(p UnitParams) ([]byte, error) { return render("dc-agent-upgrade.timer", p) }

// RenderUpgradePath renders dc-agent-upgrade.path, which starts the
// upgrade unit as soon as the running agent asks for a version.
func RenderUpgradePath(p UnitParams) ([]byte, error) { return render("dc-agent-upgrade.path", p) }

func render(name string, p UnitParams) ([]byte, error) {
	d, err := p.data()
	if err != nil {
		return nil, err
	}
	src, err := templates.ReadFile(name)
	if err != nil {
		return nil, err
	}
	t, err := template.New(name).Option("missingkey=error").Parse(string(src))
	if err != nil {
		return nil, fmt.Errorf("parse %s: %w", name, err)
	}
	var b bytes.Buffer
	if err := t.Execute(&b, d); err != nil {
		return nil, fmt.Errorf("render %s: %w", name, err)
	}
	return b.Bytes(), nil
}

// SysusersConf is the sysusers.d entry of the dc-agent user.
func SysusersConf() []byte { return bytes.Clone(sysusersConf) }

// TmpfilesConf is the tmpfiles.d config of the dc-agent directories.
func TmpfilesConf() []byte { return bytes.Clone(tmpfilesConf) }

// ExampleConfig is packaging/dc-agent.toml.example.
func ExampleConfig() []byte { return bytes.Clone(exampleConfig) }

// systemdDuration writes d the way systemd parses it ("90s", "1500ms").
func systemdDuration(d time.Duration) string {
	if d%time.Second == 0 {
		return fmt.Sprintf("%ds", d/time.Second)
	}
	return fmt.Sprintf("%dms", d/time.Millisecond)
}

// quoteArg quotes one word of an Exec/Environment line so systemd reads it
// back unchanged: specifiers (%) and variables ($) are escaped, and words
// with spaces or quotes are double-quoted with C-style escapes.
func quoteArg(s string) string {
	s = escapeSpecifiers(s)
	s = strings.ReplaceAll(s, "$", "$$")
	if s != "" && !strings.ContainsAny(s, " \t\"'\\;") {
		return s
	}
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`)
	return `"` + r.Replace(s) + `"`
}

// quotePath quotes a path for a path-list setting (ReadWritePaths=), where
// '$' is literal but specifiers still expand.
func quotePath(s string) string {
	s = escapeSpecifiers(s)
	if !strings.ContainsAny(s, " \t\"'\\") {
		return s
	}
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`)
	return `"` + r.Replace(s) + `"`
}

func escapeSpecifiers(s string) string { return strings.ReplaceAll(s, "%", "%%") }

func validName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

func validEnvName(s string) bool {
	if s == "" || s[0] >= '0' && s[0] <= '9' {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

func hasControl(s string) bool {
	for _, c := range s {
		if c < 0x20 || c == 0x7f {
			return true
		}
	}
	return false
}
