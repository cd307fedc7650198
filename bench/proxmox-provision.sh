#!/bin/sh
# A burst of 20 Proxmox provisions against the simulator (clone 300 ms,
# slowed 30% per clone running on the same storage, boot 1 s), with
# max_parallel_clones 1 and 2 side by side, plus the API requests one
# provision makes (provisioners/proxmox BenchmarkProvision20).
set -eu

main() {
	cd "$(dirname "$0")/.."
	out="$(go test -run '^$' -bench '^BenchmarkProvision20$' -benchtime 1x -count 1 ./provisioners/proxmox/)"
	printf '%s\n' "$out"
	printf '%s\n' "$out" | awk '
		/^BenchmarkProvision20/ {
			for (i = 2; i <= NF; i++) v[$(i)] = $(i-1)
		}
		END {
			if (v["speedup"] == "") { print "no figures (benchmark failed?)"; exit 1 }
			printf "proxmox burst of 20: limit 1: %.1fs, limit 2: %.1fs (x%.2f); API requests per provision: %s alone, %s in a burst\n",
				v["s/burst(limit=1)"], v["s/burst(limit=2)"], v["speedup"], v["calls/provision(alone)"], v["calls/provision(limit=2)"]
		}'
}

main "$@"
