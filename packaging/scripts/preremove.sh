#!/bin/sh
# dc-agent package pre-remove (deb: "remove" | "upgrade" | ...; rpm: 0 on
# erase, 1 on upgrade). On removal, stop (gracefully) and disable the
# service; on upgrade leave it running, postinstall restarts it.
set -e

main() {
	case "${1:-}" in
	remove | 0)
		if [ -d /run/systemd/system ]; then
			systemctl disable --now dc-agent-upgrade.timer dc-agent-upgrade.path >/dev/null 2>&1 || true
			systemctl disable --now dc-agent.service >/dev/null 2>&1 || true
		fi
		;;
	esac
}

main "$@"
