#!/bin/sh
# Installs what the test suite needs on a fresh Debian machine: apt packages
# (one apt-get update, only when something is missing) and the npm packages of
# the independent JavaScript implementation used for cross-checks. Services
# are never started here; each test starts and stops what it uses.
set -eu

main() {
	need=""
	have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }
	have sshd || need="$need openssh-server"
	# The simulated Proxmox node downloads cloud images with the real curl.
	have curl || need="$need curl"
	have dockerd || need="$need docker.io"
	have busybox || need="$need busybox-static"
	have tmux || need="$need tmux"
	have shellcheck || need="$need shellcheck"
	have chromium || need="$need chromium"
	have dash || need="$need dash"
	have systemd-analyze || need="$need systemd"
	have unshare || need="$need util-linux"
	# The gateway's tests: network namespaces, nftables (nft reads back what
	# the gateway wrote) and Caddy (tls internal).
	have ip || need="$need iproute2"
	have nft || need="$need nftables"
	have caddy || need="$need caddy"
	have dpkg-deb || need="$need dpkg"
	have rpm || need="$need rpm"
	have wget || need="$need wget"
	have make || need="$need make"
	have useradd || need="$need passwd"
	have node || need="$need nodejs"
	have npm || need="$need npm"
	if ! have initdb && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
		need="$need postgresql"
	fi
	if [ -n "$need" ]; then
		sudo=""
		[ "$(id -u)" -eq 0 ] || sudo="sudo"
		echo "test-deps: installing:$need" >&2
		$sudo apt-get update -qq
		# shellcheck disable=SC2086 # word splitting of the package list is intended
		DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends $need >/dev/null
	fi
	# sshd refuses to start without its privilege separation directory.
	if [ "$(id -u)" -eq 0 ]; then mkdir -p /run/sshd; fi

	# npm ci again whenever package-lock.json changed since the last install
	# (the stamp is a copy of the lock it installed).
	js="$(dirname "$0")/../testdata/js"
	if [ -f "$js/package-lock.json" ] && ! cmp -s "$js/package-lock.json" "$js/node_modules/.dc-installed-lock"; then
		echo "test-deps: npm ci in testdata/js" >&2
		(cd "$js" && npm ci --silent --no-audit --no-fund && cp package-lock.json node_modules/.dc-installed-lock)
	fi
}

main "$@"
