#!/bin/sh
# dc-agent package post-install (deb: "configure" [old-version]; rpm: 1 on
# install, 2 or more on upgrade). Creates the dc-agent user and directories,
# tells systemd about the unit and restarts a running agent into the new
# binary (SIGTERM is graceful: in-flight provisions finish first). It never
# enables or starts a service that has no config yet: `sudo dc-agent` does.
set -e

main() {
	if command -v systemd-sysusers >/dev/null 2>&1; then
		systemd-sysusers dc-agent.conf
	elif ! getent passwd dc-agent >/dev/null 2>&1; then
		useradd --system --user-group --home-dir /var/lib/dc-agent --no-create-home \
			--shell /usr/sbin/nologin --comment "Decent Cloud provider agent" dc-agent
	fi
	if command -v systemd-tmpfiles >/dev/null 2>&1; then
		systemd-tmpfiles --create dc-agent.conf
	else
		mkdir -p /var/lib/dc-agent
		chown dc-agent:dc-agent /var/lib/dc-agent
		chmod 0700 /var/lib/dc-agent
		chgrp dc-agent /etc/dc-agent
		chmod 0750 /etc/dc-agent
	fi
	if [ -d /run/systemd/system ]; then
		systemctl daemon-reload || true
		systemctl try-restart dc-agent.service || true
	fi
	if [ ! -f /etc/dc-agent/dc-agent.toml ]; then
		echo "dc-agent is installed. Next: sudo dc-agent"
	fi
}

main "$@"
