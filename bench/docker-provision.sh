#!/bin/sh
# Containers provisioned per minute on a real, throwaway dockerd, with 1 and
# 4 provisions in flight (provisioners/docker BenchmarkProvision). Needs root
# and docker.io + busybox-static (make test-deps). N is the number of
# containers per concurrency level (default 16).
set -eu

main() {
	n="${N:-16}"
	cd "$(dirname "$0")/.."
	out="$(go test -run '^$' -bench '^BenchmarkProvision$' -benchtime "${n}x" -count 1 ./provisioners/docker/)"
	printf '%s\n' "$out"
	printf '%s\n' "$out" | awk '
		/^BenchmarkProvision\/concurrency=/ {
			split($1, a, "="); c = a[2]; sub(/-[0-9]+$/, "", c)
			for (i = 2; i <= NF; i++) if ($(i) == "containers/min") rate[c] = $(i-1)
		}
		END {
			if (rate[1] == "" || rate[4] == "") { print "no figures (benchmark failed?)"; exit 1 }
			printf "docker provision: concurrency 1: %.1f containers/min, concurrency 4: %.1f containers/min (x%.2f)\n", rate[1], rate[4], rate[4] / rate[1]
		}'
}

main "$@"
