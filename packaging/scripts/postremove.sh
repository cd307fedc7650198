#!/bin/sh
# dc-agent package post-remove (deb: "remove" | "purge" | "upgrade" | ...;
# rpm: 0 on erase, 1 on upgrade). The config (with the agent key) and the
# state stay on removal; a deb purge deletes them. The dc-agent user stays,
# as Debian recommends for system users.
set -e

main() {
	if [ -d /run/systemd/system ]; then
		systemctl daemon-reload >/dev/null 2>&1 || true
	fi
	if [ "${1:-}" = purge ]; then
		rm -rf /etc/dc-agent /var/lib/dc-agent
	fi
}

main "$@"
