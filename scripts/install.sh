#!/bin/sh
# dc-agent installer:  curl -fsSL https://github.com/decent-stuff/dc-agent/releases/latest/download/install.sh | sh
#
# Downloads the dc-agent binary for this machine (linux amd64 or arm64),
# checks the release's SHA256SUMS against its Ed25519 signature (with
# openssl, when it is installed) and the binary against SHA256SUMS, and
# installs it atomically as /usr/local/bin/dc-agent. Re-running upgrades in
# place (restarting the service only if it is running); an unchanged binary
# is left alone. It never asks anything: stdin is this script. The whole
# body is in main(), called on the last line, so a truncated download runs
# nothing. Downloads follow redirects to https only.
#
#   sh install.sh               install or upgrade to the latest release
#   sh install.sh --token file:PATH
#                               then set this host up with the setup token
#                               (from the Decent Cloud dashboard: Agents >
#                               your pool > Add Agent) kept in PATH (0600):
#                               the wizard on a terminal, else dc-agent
#                               --no-tui with the DC_AGENT_* answers
#   sh install.sh --uninstall   remove the service and the binary (config and
#                               keys in /etc/dc-agent stay; add --purge to
#                               remove them too)
#
# The token reaches dc-agent as a 0600 file named in DC_AGENT_SETUP_TOKEN,
# never as an argument. Given as itself (--token apt_...), it is visible in
# the process list while this script runs: prefer file:PATH, or
# DC_AGENT_SETUP_TOKEN in the environment (curl ... | DC_AGENT_SETUP_TOKEN=file:PATH sh).
#
# Environment:
#   DC_AGENT_VERSION   install this version (e.g. v1.4.0) instead of the latest
#   DC_AGENT_BASE_URL  release location (default: the GitHub releases); the
#                      layout is <base>/latest/VERSION, <base>/<version>/<file>
#                      (GitHub: <base>/latest/download/VERSION,
#                      <base>/download/<version>/<file>)
#   DC_AGENT_PREFIX    install under this directory instead of / (packaging, tests)
#   DC_AGENT_SYSTEMCTL the systemctl command (tests: "systemctl --user")
#   DC_AGENT_SETUP_TOKEN  the setup token, or file:PATH (as --token)

set -u

DEFAULT_BASE_URL="https://github.com/decent-stuff/dc-agent/releases"

# The release keys (base64 Ed25519 public keys, comma-separated) whose
# signature on SHA256SUMS this installer accepts; make release fills them in.
RELEASE_KEYS=""

say() { printf 'dc-agent install: %s\n' "$*" >&2; }
die() {
	printf 'dc-agent install: error: %s\n' "$*" >&2
	exit 1
}

# detect_platform sets ARCH to the release arch of this machine or refuses.
# (Not in a $(...) subshell: die must end the script, not a subshell.)
detect_platform() {
	os=$(uname -s 2>/dev/null || echo unknown)
	machine=$(uname -m 2>/dev/null || echo unknown)
	if [ "$os" != "Linux" ]; then
		die "dc-agent runs on Linux; this is $os. Install it on your Proxmox or Linux host."
	fi
	case $machine in
	x86_64 | amd64) ARCH=amd64 ;;
	aarch64 | arm64) ARCH=arm64 ;;
	*) die "dc-agent is released for linux amd64 (x86_64) and arm64 (aarch64); this machine is $machine. Build it from source: https://github.com/decent-stuff/dc-agent" ;;
	esac
}

# fetch URL FILE downloads with curl or wget; it fails on HTTP errors.
# From https it follows redirects only to https (a release host may hand
# off to its CDN; a hop to plain http would let anyone on the path answer);
# from a plain-http loopback base it follows none.
fetch() {
	if command -v curl >/dev/null 2>&1; then
		case $1 in
		https://*) curl -fsSL --proto '=https' --proto-redir '=https' --retry 3 --connect-timeout 20 -o "$2" "$1" ;;
		*) curl -fsSL --proto '=http' --max-redirs 0 --retry 3 --connect-timeout 20 -o "$2" "$1" ;;
		esac
	elif command -v wget >/dev/null 2>&1; then
		wget_fetch "$1" "$2"
	else
		die "neither curl nor wget is installed; install one (apt-get install curl) and re-run"
	fi
}

# wget_fetch URL FILE is fetch with wget, which has no switch to keep
# redirects on https: it follows them itself, one at a time.
wget_fetch() {
	url=$1
	hops=0
	while :; do
		if headers=$(wget -q -S --max-redirect=0 -T 20 -t 3 -O "$2" "$url" 2>&1); then
			return 0
		fi
		next=$(printf '%s\n' "$headers" | sed -n 's/^ *[Ll]ocation: *//p' | tail -n 1 | tr -d '\r')
		[ -n "$next" ] || return 1
		case $next in
		/*) next="${url%%://*}://$(url_authority "$url")$next" ;;
		esac
		case $url in
		https://*) ;;
		*) say "refusing the redirect from $url: a plain-http base follows none"; return 1 ;;
		esac
		case $next in
		https://*) ;;
		*) say "refusing the redirect from $url to $next: it leaves https"; return 1 ;;
		esac
		hops=$((hops + 1))
		[ "$hops" -le 10 ] || return 1
		url=$next
	done
}

# url_authority URL prints the host[:port] part of an http(s) URL.
url_authority() {
	rest=${1#*://}
	printf '%s\n' "${rest%%[/?#]*}"
}

# is_loopback_url URL succeeds for an http(s) URL whose host is this
# machine: localhost, 127.x.y.z or [::1]. The host is parsed, not matched
# as a prefix: a URL with user info is refused (http://127.0.0.1@evil.example
# is evil.example).
is_loopback_url() {
	auth=$(url_authority "$1")
	case $auth in *@*) return 1 ;; esac
	case $auth in
	"[::1]" | "[::1]:"*) return 0 ;;
	\[*) return 1 ;;
	esac
	host=${auth%%:*}
	case $host in
	localhost) return 0 ;;
	127.*) ;;
	*) return 1 ;;
	esac
	octets=${host#127.}
	case $octets in
	*[!0-9.]* | *..* | .* | *.) return 1 ;;
	esac
	[ "$(printf '%s' "$octets" | tr -cd . | wc -c)" -eq 2 ]
}

# verify_signature DIR checks DIR/SHA256SUMS against DIR/SHA256SUMS.sig with
# the release keys, using openssl; where that cannot be done it says so
# plainly and only the checksums are checked.
verify_signature() {
	if [ -z "$RELEASE_KEYS" ]; then
		say "warning: this install.sh carries no release keys (it was not made by make release): only the SHA-256 checksum is checked, not who made the release"
		return 0
	fi
	if ! command -v openssl >/dev/null 2>&1; then
		say "warning: openssl is not installed, so only the SHA-256 checksum is checked, not the release's signature (install openssl and re-run to check it)"
		return 0
	fi
	if ! openssl pkeyutl -help 2>&1 | grep -q -- -rawin; then
		say "warning: $(openssl version 2>/dev/null || echo openssl) cannot check Ed25519 signatures (OpenSSL 3 can), so only the SHA-256 checksum is checked"
		return 0
	fi
	[ -s "$1/SHA256SUMS.sig" ] || die "the release has no SHA256SUMS.sig: refusing an unsigned release; nothing was installed"
	old_ifs=$IFS
	IFS=,
	for k in $RELEASE_KEYS; do
		IFS=$old_ifs
		printf '%s\n' "-----BEGIN PUBLIC KEY-----" "$k" "-----END PUBLIC KEY-----" >"$1/release-key.pem"
		if openssl pkeyutl -verify -pubin -inkey "$1/release-key.pem" -rawin -in "$1/SHA256SUMS" -sigfile "$1/SHA256SUMS.sig" >/dev/null 2>&1; then
			say "SHA256SUMS is signed by a dc-agent release key"
			return 0
		fi
	done
	IFS=$old_ifs
	die "SHA256SUMS is not signed by a dc-agent release key: the release was changed or made by someone else; nothing was installed"
}

# sha256 FILE prints the file's SHA-256.
sha256() {
	if command -v sha256sum >/dev/null 2>&1; then
		sha256sum "$1" | cut -d ' ' -f 1
	elif command -v shasum >/dev/null 2>&1; then
		shasum -a 256 "$1" | cut -d ' ' -f 1
	else
		die "no sha256sum or shasum to verify the download; install coreutils and re-run"
	fi
}

# asset_url BASE VERSION FILE and latest_url BASE map the release layout,
# GitHub's included.
asset_url() {
	case $1 in
	https://github.com/*/releases) echo "$1/download/$2/$3" ;;
	*) echo "$1/$2/$3" ;;
	esac
}
latest_url() {
	case $1 in
	https://github.com/*/releases) echo "$1/latest/download/VERSION" ;;
	*) echo "$1/latest/VERSION" ;;
	esac
}

valid_version() {
	case $1 in
	"" | *[!A-Za-z0-9._+-]* | [!A-Za-z0-9]*) return 1 ;;
	esac
	[ "${#1}" -le 64 ]
}

# as_root runs a command as root: directly, or with sudo when it needs no
# password (this script never prompts).
as_root() {
	if [ -n "$SUDO" ]; then
		"$SUDO" -n "$@"
	else
		"$@"
	fi
}

# pick_sudo sets SUDO for writing into DIR.
pick_sudo() {
	SUDO=""
	if [ -n "${DC_AGENT_PREFIX:-}" ] || [ "$(id -u)" -eq 0 ]; then
		return 0
	fi
	if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
		SUDO=sudo
		return 0
	fi
	die "installing into $1 needs root; run: curl -fsSL <this script's URL> | sudo sh"
}

# systemctl runs the service manager's CLI (DC_AGENT_SYSTEMCTL, e.g.
# "systemctl --user" in tests).
systemctl_cmd() {
	# shellcheck disable=SC2086 # the variable may hold a command and a flag
	${DC_AGENT_SYSTEMCTL:-systemctl} "$@"
}

service_running() {
	command -v systemctl >/dev/null 2>&1 && systemctl_cmd is-active --quiet dc-agent.service 2>/dev/null
}

uninstall() {
	bin="$BINDIR/dc-agent"
	purge=""
	[ "${1:-}" = "--purge" ] && purge="--purge"
	pick_sudo "$BINDIR"
	if [ -z "${DC_AGENT_PREFIX:-}" ] && [ -x "$bin" ] && command -v systemctl >/dev/null 2>&1 &&
		systemctl_cmd cat dc-agent.service >/dev/null 2>&1; then
		# shellcheck disable=SC2086 # $purge is one optional flag
		as_root "$bin" service uninstall $purge || die "removing the service failed (see above); the binary stays"
	fi
	if [ ! -e "$bin" ] && [ ! -e "$bin.previous" ]; then
		say "dc-agent is not installed in $BINDIR; nothing to do"
		return 0
	fi
	as_root rm -f "$bin" "$bin.previous"
	say "removed $bin"
	if [ -z "$purge" ]; then
		say "config and keys in /etc/dc-agent and state in /var/lib/dc-agent are kept (re-run with --uninstall --purge to remove them)"
	fi
}

install_release() {
	detect_platform
	arch=$ARCH
	base=${DC_AGENT_BASE_URL:-$DEFAULT_BASE_URL}
	base=${base%/}
	# Plain http is for a server on this machine only (tests).
	case $base in
	https://?*) ;;
	http://?*) is_loopback_url "$base" || die "DC_AGENT_BASE_URL must be an https:// URL (http:// only for a loopback address: 127.0.0.1, [::1], localhost): $base" ;;
	*) die "DC_AGENT_BASE_URL must be an https:// URL (http:// only for a loopback address: 127.0.0.1, [::1], localhost): $base" ;;
	esac
	version=${DC_AGENT_VERSION:-}
	tmp=$(mktemp -d 2>/dev/null) || die "cannot create a temporary directory"
	trap 'rm -rf "$tmp"' EXIT INT TERM HUP

	if [ -z "$version" ]; then
		fetch "$(latest_url "$base")" "$tmp/VERSION" || die "cannot read the latest version from $(latest_url "$base")"
		version=$(head -n 1 "$tmp/VERSION" | tr -d '[:space:]')
	fi
	valid_version "$version" || die "'$version' is not a release version (e.g. v1.4.0)"
	asset="dc-agent_linux_$arch"
	say "downloading dc-agent $version for linux/$arch from $base"
	fetch "$(asset_url "$base" "$version" SHA256SUMS)" "$tmp/SHA256SUMS" || die "cannot download SHA256SUMS of $version (does the version exist?)"
	fetch "$(asset_url "$base" "$version" SHA256SUMS.sig)" "$tmp/SHA256SUMS.sig" || rm -f "$tmp/SHA256SUMS.sig"
	verify_signature "$tmp"
	fetch "$(asset_url "$base" "$version" "$asset")" "$tmp/$asset" || die "cannot download $asset of $version"

	want=$(awk -v f="$asset" '($2 == f || $2 == "*" f) { print $1; exit }' "$tmp/SHA256SUMS")
	[ -n "$want" ] || die "SHA256SUMS of $version lists no $asset; refusing to install"
	got=$(sha256 "$tmp/$asset")
	if [ "$got" != "$want" ]; then
		die "checksum mismatch for $asset: expected $want, got $got. The download is corrupt or was tampered with; nothing was installed"
	fi
	chmod 0755 "$tmp/$asset"
	if ! "$tmp/$asset" --version >/dev/null 2>&1; then
		die "the downloaded binary does not run on this machine ($tmp/$asset --version failed); nothing was installed"
	fi

	bin="$BINDIR/dc-agent"
	if [ -f "$bin" ] && [ "$(sha256 "$bin")" = "$want" ]; then
		say "dc-agent $version is already installed at $bin; nothing changed"
	else
		pick_sudo "$BINDIR"
		as_root mkdir -p "$BINDIR"
		# Copy next to the target, then rename: the switch is atomic and a
		# running agent keeps its old binary until it restarts.
		new="$BINDIR/.dc-agent.new.$$"
		if ! { as_root cp "$tmp/$asset" "$new" && as_root chmod 0755 "$new" && as_root mv -f "$new" "$bin"; }; then
			as_root rm -f "$new"
			die "installing $bin failed"
		fi
		say "installed dc-agent $version at $bin"
		if service_running; then
			say "restarting the running dc-agent service into $version"
			# SIGTERM is graceful: in-flight provisions finish first.
			# shellcheck disable=SC2086 # the variable may hold a command and a flag
			as_root ${DC_AGENT_SYSTEMCTL:-systemctl} restart dc-agent.service || die "restarting dc-agent.service failed; see: systemctl status dc-agent"
		fi
	fi
	if [ -n "$TOKEN" ]; then
		set_up "$bin"
		return
	fi
	if [ -n "${DC_AGENT_PREFIX:-}" ]; then
		echo "Next: sudo $bin"
	else
		echo "Next: sudo dc-agent"
	fi
}

# set_up BIN hands the setup token on to dc-agent in a 0600 file named by
# DC_AGENT_SETUP_TOKEN (never as an argument): the wizard on a terminal,
# else the scripted setup (dc-agent --no-tui, answered by the DC_AGENT_*
# variables). The file is removed afterwards; one the provider named
# (file:PATH) is left alone.
set_up() {
	agent=$1
	case $TOKEN in
	file:*)
		[ -r "${TOKEN#file:}" ] || die "cannot read the setup token file ${TOKEN#file:}; dc-agent $version is installed, run: sudo dc-agent --setup-token $TOKEN"
		ref=$TOKEN
		;;
	*)
		dir=$(umask 077 && mktemp -d 2>/dev/null) || die "cannot create a private temporary directory for the setup token"
		trap 'rm -rf "$tmp" "$dir"' EXIT INT TERM HUP
		(umask 077 && printf '%s\n' "$TOKEN" >"$dir/setup-token") || die "cannot write the setup token to $dir"
		ref="file:$dir/setup-token"
		;;
	esac
	# Every DC_AGENT_* answer goes on (sudo would drop them), the token as
	# the file's name only.
	set -- env
	for name in $(env | sed -n 's/^\(DC_AGENT_[A-Z0-9_]*\)=.*/\1/p'); do
		case $name in
		DC_AGENT_SETUP_TOKEN | DC_AGENT_VERSION | DC_AGENT_BASE_URL | DC_AGENT_PREFIX | DC_AGENT_SYSTEMCTL) continue ;;
		esac
		value=""
		eval "value=\${$name}"
		set -- "$@" "$name=$value"
	done
	set -- "$@" "DC_AGENT_SETUP_TOKEN=$ref"
	pick_sudo "$BINDIR"
	if [ -t 1 ] && (: </dev/tty) 2>/dev/null; then
		say "opening the setup wizard with your setup token"
		as_root "$@" "$agent" </dev/tty >/dev/tty
	else
		say "no terminal: setting up with dc-agent --no-tui (answers from the DC_AGENT_* variables)"
		as_root "$@" "$agent" --no-tui </dev/null
	fi
}

main() {
	SUDO=""
	BINDIR="${DC_AGENT_PREFIX:-}/usr/local/bin"
	TOKEN=${DC_AGENT_SETUP_TOKEN:-}
	case "${1:-}" in
	"") install_release ;;
	--token)
		[ -n "${2:-}" ] || die "--token needs the setup token from the Decent Cloud dashboard (Agents > your pool > Add Agent): --token file:PATH"
		TOKEN=$2
		case $TOKEN in
		file:*) ;;
		*) say "warning: a setup token given as itself is visible in the process list while this script runs; next time use --token file:PATH or DC_AGENT_SETUP_TOKEN" ;;
		esac
		install_release
		;;
	--uninstall) uninstall "${2:-}" ;;
	-h | --help) sed -n '2,37p' "$0" 2>/dev/null || echo "usage: install.sh [--token file:PATH | --uninstall [--purge]]" ;;
	*) die "unknown argument '$1' (use --token file:PATH, --uninstall, or no argument to install)" ;;
	esac
}

main "$@"
