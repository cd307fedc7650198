#!/bin/sh
# Gateway rules and routes for 500 VMs on the real nftables and a real Caddy
# (Debian's caddy, tls internal) in a throwaway network namespace
# (gateway BenchmarkGateway500): time to add one VM's gateway with 500 in
# place, to reconcile all (nothing to change, and everything to put back),
# to release one. Needs root, iproute2, nftables, caddy (make test-deps).
set -eu

main() {
	cd "$(dirname "$0")/.."
	out="$(go test -run '^$' -bench '^BenchmarkGateway500$' -benchtime 1x -count 1 -timeout 30m ./gateway/ 2>&1)" || {
		printf '%s\n' "$out"
		exit 1
	}
	printf '%s\n' "$out" | grep -E '^(gateway,|BenchmarkGateway500)'
}

main "$@"
