package service

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
)

// Uninstall stops and disables the service and removes the unit files
// Install wrote. The config directory (with the agent key) and the state
// directory stay unless o.Purge, which also removes the system user.
// Uninstalling what is not installed changes nothing.
func Uninstall(ctx context.Context, o Options) (changed bool, err error) {
	o, err = o.withDefaults()
	if err != nil {
		return false, err
	}
	if err := o.needRoot("removing"); err != nil {
		return false, err
	}
	mark := func(c bool) bool { changed = changed || c; return c }
	p, err := o.paths()
	if err != nil {
		return false, err
	}
	// Read the settings before the config may go away.
	settings, serr := o.loadSettings()
	if o.Root == "" {
		sd := o.systemd()
		for _, unit := range []string{o.Name + "-upgrade.timer", o.Name + "-upgrade.path", o.unitName()} {
			props, err := sd.show(ctx, unit)
			if err != nil {
				return changed, err
			}
			if props["LoadState"] == "not-found" {
				continue
			}
			// stop waits for the graceful shutdown (TimeoutStopSec).
			if props["ActiveState"] != "inactive" && props["ActiveState"] != "failed" {
				if _, err := sd.run(ctx, "stop", unit); err != nil {
					return changed, err
				}
				o.emit("stop", mark(true), "stopped %s", unit)
			}
			if props["UnitFileState"] == "enabled" {
				if _, err := sd.run(ctx, "disable", unit); err != nil {
					return changed, err
				}
				o.emit("disable", mark(true), "disabled %s", unit)
			}
		}
	}
	for _, f := range []string{p.unit, p.upgradeService, p.upgradeTimer, p.upgradePath} {
		removed, err := removeIfExists(f)
		if err != nil {
			return changed, err
		}
		if mark(removed) {
			o.emit("unit file", true, "removed %s", f)
		}
	}
	if o.Root == "" && changed {
		sd := o.systemd()
		if _, err := sd.run(ctx, "daemon-reload"); err != nil {
			return changed, err
		}
		// Forget a failed state so `systemctl status` shows nothing stale.
		_, _ = sd.run(ctx, "reset-failed", o.unitName())
		o.emit("daemon-reload", true, "systemd forgot %s", o.unitName())
	}
	if !o.Purge {
		if !changed {
			o.emit("uninstall", false, "%s is not installed; nothing to remove", o.unitName())
		}
		o.emit("kept", false, "config and keys in %s and state in %s (--purge removes them)",
			o.hostPath(filepath.Dir(o.ConfigPath)), o.hostPath(settings.stateDir))
		return changed, nil
	}
	if serr != nil {
		// An unreadable config must not stop a purge; the default state
		// directory is still ours to remove.
		settings.stateDir = "/var/lib/" + o.Name
	}
	for _, dir := range []string{filepath.Dir(o.ConfigPath), settings.stateDir} {
		removed, err := o.purgeDir(dir)
		if err != nil {
			return changed, err
		}
		mark(removed)
	}
	if !o.User && o.Root == "" {
		removed, err := removeAccount(ctx, o.Userdel, o.userDB, o.RunAs)
		if err != nil {
			return changed, err
		}
		if mark(removed) {
			o.emit("user", true, "removed system user %s", o.RunAs)
		}
	}
	return changed, nil
}

// purgeDir removes a directory the service owns. Only a directory named
// after the service is removed whole, so a config at /etc/dc-agent.toml
// never takes /etc with it.
func (o Options) purgeDir(dir string) (bool, error) {
	host := o.hostPath(dir)
	if filepath.Base(dir) != o.Name {
		o.emit("purge", false, "kept %s: not a directory of its own (remove what you no longer need by hand)", host)
		return false, nil
	}
	if _, err := os.Lstat(host); err != nil {
		return false, nil
	}
	if err := os.RemoveAll(host); err != nil {
		return false, fmt.Errorf("purge %s: %w", host, err)
	}
	o.emit("purge", true, "removed %s", host)
	return true, nil
}
