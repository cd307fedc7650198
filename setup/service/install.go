package service

import (
	"context"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/decent-stuff/dc-agent/packaging"
)

// Result summarizes an install.
type Result struct {
	// UnitPath is the unit file written (or found unchanged).
	UnitPath string
	// Changed is true when any step modified the system.
	Changed bool
	// Restarted is true when a running service was restarted because its
	// unit changed.
	Restarted bool
	// State is the unit's state after the install (zero with Root or
	// NoStart).
	State State
}

// Install makes the system match o: unit rendered, user present, directories
// owned and moded, unit enabled and running. Running it again with the same
// options changes nothing; with different options it updates the unit and
// restarts the service once.
func Install(ctx context.Context, o Options) (Result, error) {
	o, err := o.withDefaults()
	if err != nil {
		return Result{}, err
	}
	if err := o.needRoot("installing"); err != nil {
		return Result{}, err
	}
	var res Result
	mark := func(changed bool) bool {
		res.Changed = res.Changed || changed
		return changed
	}
	settings, err := o.loadSettings()
	if err != nil {
		return res, err
	}
	if !o.User && len(settings.inlineSecrets) > 0 {
		// The service reads its config through its group: no secret may be in it.
		return res, fmt.Errorf("%s holds secrets inline (%s); the system service reads its config through the %s group (root:%s 0640), so move each into a 0600 file of its own first (agent_secret_key = \"/etc/dc-agent/agent.key\", api_token_secret_file, api_token_file), then re-run", o.hostPath(o.ConfigPath), strings.Join(settings.inlineSecrets, ", "), o.RunAs, o.RunAs)
	}
	if !settings.exists {
		if o.Root == "" && !o.NoStart {
			return res, fmt.Errorf("config %s does not exist, so the service could not start: create it first (sudo dc-agent, or dc-agent setup proxmox), or pass --no-start", o.ConfigPath)
		}
		o.emit("config", false, "%s does not exist yet; the unit uses the default settings", o.hostPath(o.ConfigPath))
	}
	params := o.unitParams(settings)
	unit, err := packaging.RenderUnit(params)
	if err != nil {
		return res, fmt.Errorf("render the unit: %w", err)
	}
	if st, err := os.Stat(o.hostPath(o.Binary)); err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
		if o.Root == "" {
			return res, fmt.Errorf("the binary %s is not an executable file; pass --binary with the installed dc-agent", o.Binary)
		}
		o.emit("binary", false, "%s is not in %s yet (the package puts it there)", o.Binary, o.Root)
	}
	p, err := o.paths()
	if err != nil {
		return res, err
	}
	res.UnitPath = p.unit

	// The account and the directories it owns.
	var own *owner
	var configDirOwner *owner
	if !o.User && o.Root == "" {
		acct, created, err := ensureAccount(ctx, o.Useradd, o.userDB, o.RunAs, "/var/lib/"+o.Name)
		if err != nil {
			return res, err
		}
		if mark(created) {
			o.emit("user", true, "created system user %s (uid %d)", acct.name, acct.uid)
		} else {
			o.emit("user", false, "system user %s exists (uid %d)", acct.name, acct.uid)
		}
		own = &owner{acct.uid, acct.gid}
		// The config directory stays root's; the service reads it through
		// its group.
		configDirOwner = &owner{0, acct.gid}
	}
	configDir := o.hostPath(filepath.Dir(o.ConfigPath))
	// The system service reads its config through the group; a user
	// service is its own owner (and systemd --user applies 0700 anyway).
	configMode := fs.FileMode(0o750)
	if o.User {
		configMode = 0o700
	}
	changed, err := ensureDir(configDir, configMode, configDirOwner)
	if err != nil {
		return res, err
	}
	o.emit("config directory", mark(changed), "%s (mode %04o)", configDir, configMode)
	// The system service's config is root's, read through the group: the
	// root upgrade job acts on its settings, so the service account must
	// not be able to change them. Secrets stay the account's, 0600.
	cfgFile := configFile{name: filepath.Base(o.ConfigPath), mode: 0o600, own: own}
	if !o.User {
		cfgFile.mode, cfgFile.own = 0o640, configDirOwner
	}
	files, err := secureConfigFiles(configDir, cfgFile, own)
	if err != nil {
		return res, err
	}
	if mark(len(files) > 0) {
		o.emit("config files", true, "secured %s (%s %04o; secrets owned by %s, 0600)", strings.Join(files, ", "), cfgFile.name, cfgFile.mode, o.RunAs)
	}
	stateDir := o.hostPath(settings.stateDir)
	changed, err = ensureDir(stateDir, 0o700, own)
	if err != nil {
		return res, err
	}
	o.emit("state directory", mark(changed), "%s (mode 0700)", stateDir)
	if g := settings.gateway; g != nil {
		// The service writes the Caddy site files (Caddy, another user,
		// reads them) and the port allocations.
		dirs := map[string]fs.FileMode{g.CaddySitesDir: 0o755}
		if d := filepath.Dir(g.PortAllocationsPath); d != settings.stateDir {
			dirs[d] = 0o700
		}
		for _, dir := range slices.Sorted(maps.Keys(dirs)) {
			changed, err = ensureDir(o.hostPath(dir), dirs[dir], own)
			if err != nil {
				return res, err
			}
			o.emit("gateway directory", mark(changed), "%s (mode %04o, the service's)", o.hostPath(dir), dirs[dir])
		}
	}

	// Unit files.
	unitChanged, err := writeIfChanged(p.unit, unit, 0o644)
	if err != nil {
		return res, err
	}
	o.emit("unit file", mark(unitChanged), "%s", p.unit)
	timerChanged, err := o.syncUpgradeTimer(ctx, p, params, settings.autoUpdate)
	if err != nil {
		return res, err
	}
	mark(timerChanged)

	if o.Root != "" {
		o.emit("systemctl", false, "skipped (--root): enable and start happen on the target system")
		return res, nil
	}
	sd := o.systemd()
	if unitChanged || timerChanged {
		if _, err := sd.run(ctx, "daemon-reload"); err != nil {
			return res, err
		}
		o.emit("daemon-reload", true, "systemd re-read the unit files")
	}
	if settings.autoUpdate && !o.User {
		for _, u := range []string{o.Name + "-upgrade.timer", o.Name + "-upgrade.path"} {
			if err := o.enableNow(ctx, u, &res); err != nil {
				return res, err
			}
		}
	}
	if enabled, _ := sd.run(ctx, "is-enabled", o.unitName()); enabled != "enabled" {
		if _, err := sd.run(ctx, "enable", o.unitName()); err != nil {
			return res, err
		}
		o.emit("enable", mark(true), "%s starts at boot", o.unitName())
	} else {
		o.emit("enable", false, "%s is enabled", o.unitName())
	}
	if o.NoStart {
		o.emit("start", false, "skipped (--no-start): start it with systemctl start %s", o.unitName())
		return res, nil
	}
	props, err := sd.show(ctx, o.unitName())
	if err != nil {
		return res, err
	}
	var newPID bool
	switch active := props["ActiveState"]; {
	case active == "active" && unitChanged:
		if _, err := sd.run(ctx, "restart", "--no-block", o.unitName()); err != nil {
			return res, err
		}
		res.Restarted, newPID = true, true
		o.emit("restart", mark(true), "restarting %s with the new unit", o.unitName())
	case active == "active":
		o.emit("start", false, "%s is already running", o.unitName())
	case active == "activating" || active == "reloading":
		o.emit("start", false, "%s is %s", o.unitName(), active)
	default:
		if active == "failed" {
			// A unit that hit its start limit refuses to start until reset.
			_, _ = sd.run(ctx, "reset-failed", o.unitName())
		}
		if _, err := sd.run(ctx, "start", "--no-block", o.unitName()); err != nil {
			return res, err
		}
		o.emit("start", mark(true), "starting %s", o.unitName())
	}
	st, err := o.waitActive(ctx, sd, props, newPID)
	res.State = st
	if err != nil {
		return res, err
	}
	o.emit("running", false, "%s is active (running): %s", o.unitName(), orDash(st.StatusText))
	return res, nil
}

// enableNow enables and starts a unit unless it already is.
func (o Options) enableNow(ctx context.Context, unit string, res *Result) error {
	sd := o.systemd()
	enabled, _ := sd.run(ctx, "is-enabled", unit)
	active, _ := sd.run(ctx, "is-active", unit)
	if enabled == "enabled" && active == "active" {
		o.emit("auto-update", false, "%s is enabled", unit)
		return nil
	}
	if _, err := sd.run(ctx, "enable", "--now", unit); err != nil {
		return err
	}
	res.Changed = true
	o.emit("auto-update", true, "enabled %s (agent.auto_update = true)", unit)
	return nil
}

// syncUpgradeTimer writes the auto-update units when auto_update is on and
// removes them (stopping the timer and the path unit) when it is off: the
// daily timer, and the path unit that starts the upgrade at once when the
// running agent leaves a version the API asked for.
func (o Options) syncUpgradeTimer(ctx context.Context, p paths, params packaging.UnitParams, on bool) (bool, error) {
	if o.User {
		return false, nil
	}
	if !on {
		if _, err := os.Stat(p.upgradeTimer); err != nil {
			return false, nil
		}
		if o.Root == "" {
			_, _ = o.systemd().run(ctx, "disable", "--now", o.Name+"-upgrade.timer", o.Name+"-upgrade.path")
		}
		removed := false
		for _, f := range []string{p.upgradeTimer, p.upgradePath, p.upgradeService} {
			r, err := removeIfExists(f)
			removed = removed || r
			if err != nil {
				return removed, err
			}
		}
		o.emit("auto-update", true, "removed the auto-update units (agent.auto_update is off)")
		return removed, nil
	}
	svc, err := packaging.RenderUpgradeService(params)
	if err != nil {
		return false, err
	}
	timer, err := packaging.RenderUpgradeTimer(params)
	if err != nil {
		return false, err
	}
	watch, err := packaging.RenderUpgradePath(params)
	if err != nil {
		return false, err
	}
	changed := false
	for _, f := range []struct {
		path string
		b    []byte
	}{{p.upgradeService, svc}, {p.upgradeTimer, timer}, {p.upgradePath, watch}} {
		c, err := writeIfChanged(f.path, f.b, 0o644)
		changed = changed || c
		if err != nil {
			return changed, err
		}
	}
	o.emit("auto-update units", changed, "%s (daily), %s (at once when the API asks for a version)", p.upgradeTimer, p.upgradePath)
	return changed, nil
}

// waitActive polls until the unit is active (running), which for
// Type=notify means the agent sent READY=1, with a new main process when
// newPID (a restart). A failure, an automatic restart or the timeout ends
// the wait with an error that carries the unit's state and its last
// journal lines.
func (o Options) waitActive(ctx context.Context, sd systemd, before map[string]string, newPID bool) (State, error) {
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	restarts := atoi(before["NRestarts"])
	last := before
	for {
		props, err := sd.show(ctx, o.unitName())
		if err == nil {
			last = props
			active, sub := props["ActiveState"], props["SubState"]
			switch {
			case active == "active" && sub == "running" && (!newPID || props["MainPID"] != before["MainPID"]):
				return stateFrom(props), nil
			case active == "failed" || sub == "auto-restart" || atoi(props["NRestarts"]) > restarts:
				return stateFrom(props), o.notActiveError(ctx, sd, props, "failed to start")
			}
		}
		select {
		case <-ctx.Done():
			return stateFrom(last), o.notActiveError(ctx, sd, last, fmt.Sprintf("did not become active within %s", o.Timeout))
		case <-time.After(o.pollInterval):
		}
	}
}

func (o Options) notActiveError(ctx context.Context, sd systemd, props map[string]string, what string) error {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s: state %s (%s), result %s, exit status %s", o.unitName(), what,
		props["ActiveState"], props["SubState"], props["Result"], orDash(props["ExecMainStatus"]))
	if s := props["StatusText"]; s != "" {
		fmt.Fprintf(&b, ", last status %q", s)
	}
	jctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	lines := sd.journal(jctx, o.unitName(), 20)
	if len(lines) > 0 {
		b.WriteString("\nlast log lines:\n  " + strings.Join(lines, "\n  "))
	}
	scope := ""
	if o.User {
		scope = "--user "
	}
	fmt.Fprintf(&b, "\nsee: systemctl %sstatus %s; journalctl %s-u %s", scope, o.unitName(), scope, o.unitName())
	return fmt.Errorf("%s", b.String())
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
