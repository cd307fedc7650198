#!/bin/sh
# Builds the release artifacts (`make release`): reproducible, stripped,
# version-stamped dc-agent binaries for linux amd64 and arm64, install.sh,
# deb and rpm packages (nfpm), and SHA256SUMS, in the release layout that
# install.sh and `dc-agent upgrade` read (docs/release.md):
#
#   $DIST/latest/VERSION                 one line: the newest version
#   $DIST/install.sh                     the one-liner installer
#   $DIST/<version>/VERSION
#   $DIST/<version>/SHA256SUMS           sha256sum of every file below
#   $DIST/<version>/SHA256SUMS.sig       Ed25519 signature of SHA256SUMS (64 bytes)
#   $DIST/<version>/dc-agent_linux_amd64
#   $DIST/<version>/dc-agent_linux_arm64
#   $DIST/<version>/install.sh
#   $DIST/<version>/dc-agent_<pkgversion>_<arch>.deb, dc-agent-<pkgversion>-1.<arch>.rpm
#
# Same commit, same toolchain → byte-identical files: -trimpath, no build id,
# no VCS stamp, and every timestamp (binary stamp, package entries, file
# mtimes) taken from SOURCE_DATE_EPOCH (default: the commit time).
#
# Signed: RELEASE_KEY is the Ed25519 private key (PKCS#8 PEM, mode 0600, kept
# outside the repository) that signs SHA256SUMS; RELEASE_KEYS (default
# packaging/release-keys.pub) lists the public keys the release's binaries
# and install.sh trust, which must include RELEASE_KEY's (list the next key
# there one release before it signs: that is a key rotation).
#
# Environment: VERSION (required), RELEASE_KEY (required), RELEASE_KEYS,
# COMMIT, DIST (default dist), GO (default go), ARCHES (default "amd64
# arm64"), PACKAGES (default "deb rpm"; empty for none), SOURCE_DATE_EPOCH,
# NFPM (the nfpm command).
set -eu

NFPM_MODULE="github.com/goreleaser/nfpm/v2/cmd/nfpm@v2.45.2"

die() {
	echo "release: $*" >&2
	exit 1
}

# pkg_version turns a release version into one deb and rpm both accept and
# order correctly: v1.2.3 → 1.2.3, v1.2.3-rc.1 → 1.2.3~rc.1, and a version
# that is not dotted numbers (a commit id from git describe) → 0.0.0~<it>.
pkg_version() {
	v=${1#v}
	case $v in
	[0-9]*.[0-9]*) ;;
	*) v="0.0.0~$v" ;;
	esac
	first=${v%%-*}
	if [ "$first" != "$v" ]; then
		rest=${v#*-}
		v="$first~$(printf '%s' "$rest" | tr '-' '.')"
	fi
	printf '%s\n' "$v"
}

main() {
	version=${VERSION:-}
	[ -n "$version" ] || die "VERSION is not set (make release sets it from git describe)"
	case $version in
	*[!A-Za-z0-9._+-]* | [!A-Za-z0-9]*) die "VERSION '$version' may hold only letters, digits and . _ + - and must start with a letter or digit" ;;
	esac
	key=${RELEASE_KEY:-}
	[ -n "$key" ] || die "RELEASE_KEY is not set: the path of the Ed25519 private key that signs SHA256SUMS (make one outside the repository with: openssl genpkey -algorithm ed25519 -out release.key && chmod 600 release.key, and add the middle line of 'openssl pkey -in release.key -pubout' to packaging/release-keys.pub)"
	keys=${RELEASE_KEYS:-packaging/release-keys.pub}
	commit=${COMMIT:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}
	dist=${DIST:-dist}
	go=${GO:-go}
	arches=${ARCHES:-amd64 arm64}
	packages=${PACKAGES-deb rpm}
	nfpm=${NFPM:-}
	if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
		SOURCE_DATE_EPOCH=$(git log -1 --format=%ct 2>/dev/null || echo 0)
	fi
	export SOURCE_DATE_EPOCH
	date=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ)

	out="$dist/$version"
	rm -rf "$out"
	mkdir -p "$out" "$dist/latest"
	stage=$(mktemp -d)
	trap 'rm -rf "$stage"' EXIT INT TERM

	# The signer checks the key and the trusted list first (nothing is
	# built for a release it could not sign) and prints the list as one
	# comma-separated line for the binaries and install.sh.
	CGO_ENABLED=0 $go build -trimpath -o "$stage/bin/release-sign" ./internal/releasesig/sign
	trusted=$("$stage/bin/release-sign" -list -keys "$keys" -key "$key") || die "the release key or $keys is not usable (see above)"

	pkg="github.com/decent-stuff/dc-agent/internal/buildinfo"
	ldflags="-s -w -buildid= -X $pkg.Version=$version -X $pkg.Commit=$commit -X $pkg.Date=$date -X $pkg.ReleaseKeys=$trusted"
	for arch in $arches; do
		case $arch in amd64 | arm64) ;; *) die "unsupported arch '$arch' (amd64, arm64)" ;; esac
		echo "release: dc-agent $version linux/$arch" >&2
		CGO_ENABLED=0 GOOS=linux GOARCH=$arch $go build -trimpath -buildvcs=false \
			-ldflags "$ldflags" -o "$out/dc-agent_linux_$arch" ./cmd/dc-agent
	done
	# install.sh carries the trusted keys too (base64 has no '|').
	sed "s|^RELEASE_KEYS=\"\"\$|RELEASE_KEYS=\"$trusted\"|" scripts/install.sh >"$out/install.sh"
	grep -q "^RELEASE_KEYS=\"$trusted\"\$" "$out/install.sh" || die "scripts/install.sh has no RELEASE_KEYS=\"\" line to fill in"
	cp "$out/install.sh" "$dist/install.sh"
	chmod 0755 "$out/install.sh" "$dist/install.sh"

	if [ -n "$packages" ]; then
		if [ -z "$nfpm" ]; then
			# Built into the temp dir, so nfpm never enters go.mod.
			# Static and -trimpath like the release binaries: the standard
			# library is compiled once for both.
			CGO_ENABLED=0 GOBIN="$stage/bin" $go install -trimpath "$NFPM_MODULE"
			nfpm="$stage/bin/nfpm"
		fi
		# The packaged unit is rendered by the same code as on a host: by
		# the release binary of this machine's arch when there is one (no
		# second build), else by a host build.
		render="$out/dc-agent_linux_$($go env GOARCH)"
		if [ "$($go env GOOS)" != linux ] || [ ! -x "$render" ]; then
			render="$stage/bin/dc-agent"
			CGO_ENABLED=0 $go build -trimpath -o "$render" ./cmd/dc-agent
		fi
		"$render" service install --root "$stage/root" --binary /usr/bin/dc-agent >/dev/null 2>"$stage/render.log" ||
			{ cat "$stage/render.log" >&2; die "rendering the unit failed"; }
		pv=$(pkg_version "$version")
		for arch in $arches; do
			for p in $packages; do
				echo "release: $p $pv $arch" >&2
				# shellcheck disable=SC2086 # $nfpm is a command line
				NFPM_ARCH=$arch PKG_VERSION=$pv BINARY="$out/dc-agent_linux_$arch" \
					UNIT="$stage/root/etc/systemd/system/dc-agent.service" \
					$nfpm package --config packaging/nfpm.yaml --packager "$p" --target "$out/" >"$stage/nfpm.log" 2>&1 ||
					{ cat "$stage/nfpm.log" >&2; die "nfpm $p $arch failed"; }
			done
		done
	fi

	printf '%s\n' "$version" >"$out/VERSION"
	printf '%s\n' "$version" >"$dist/latest/VERSION"
	(cd "$out" && find . -maxdepth 1 -type f ! -name SHA256SUMS ! -name VERSION | sed 's|^\./||' |
		LC_ALL=C sort | xargs sha256sum) >"$stage/SHA256SUMS"
	mv "$stage/SHA256SUMS" "$out/SHA256SUMS"
	"$stage/bin/release-sign" -key "$key" -keys "$keys" "$out/SHA256SUMS" >/dev/null || die "signing SHA256SUMS failed"
	find "$dist/latest" "$dist/install.sh" "$out" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
	echo "release: $out" >&2
	cat "$out/SHA256SUMS"
}

main "$@"
