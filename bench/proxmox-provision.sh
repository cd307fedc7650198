#!/bin/sh
# Proxmox provisioning against the simulator, two measurements:
#  1. a burst of 20 provisions on one node (clone 300 ms, slowed 30% per
#     clone running on the same storage, boot 1 s) with max_parallel_clones
#     1 and 2 side by side, plus the API requests one provision makes
#     (provisioners/proxmox BenchmarkProvision20);
#  2. a burst of 20 provisions on one node and on a 3-node cluster side by
#     side, same clone (2 s) and boot (0.6 s) times, one clone at a time
#     per node: provisions per minute and API requests per provision
#     (BenchmarkCluster20);
#  3. the backend's cost for an agent with 1,000 active contracts on a
#     3-node cluster (simulator in its own process): API requests, wall and
#     CPU time of a health round, a reconcile listing and an inventory
#     (BenchmarkThousandContracts).
set -eu

main() {
	cd "$(dirname "$0")/.."
	out="$(go test -run '^$' -bench '^(BenchmarkProvision20|BenchmarkCluster20|BenchmarkThousandContracts)$' -benchtime 1x -count 1 -timeout 20m ./provisioners/proxmox/)"
	printf '%s\n' "$out"
	printf '%s\n' "$out" | awk '
		/^Benchmark(Provision20|Cluster20|ThousandContracts)/ {
			for (i = 2; i <= NF; i++) v[$(i)] = $(i-1)
		}
		END {
			if (v["speedup"] == "" || v["provisions/min(3nodes)"] == "" || v["heap-MiB"] == "") { print "no figures (benchmark failed?)"; exit 1 }
			printf "proxmox burst of 20: limit 1: %.1fs, limit 2: %.1fs (x%.2f); API requests per provision: %s alone, %s in a burst\n",
				v["s/burst(limit=1)"], v["s/burst(limit=2)"], v["s/burst(limit=1)"] / v["s/burst(limit=2)"], v["calls/provision(alone)"], v["calls/provision(limit=2)"]
			printf "proxmox cluster, burst of 20: 1 node %.1f provisions/min, 3 nodes %.1f provisions/min (x%.2f); API requests per provision: %s on 1 node, %s on 3 nodes\n",
				v["provisions/min(1node)"], v["provisions/min(3nodes)"], v["provisions/min(3nodes)"] / v["provisions/min(1node)"], v["calls/provision(1node)"], v["calls/provision(3nodes)"]
			printf "proxmox, 1000 active contracts on 3 nodes: health round %s requests, %s ms CPU (%.1fs wall with the simulator); reconcile list %s request, %s ms CPU; inventory %s request, %s ms CPU; heap %.1f MiB\n",
				v["requests/health-round"], v["cpu-ms/health-round"], v["s/health-round"], v["requests/reconcile-list"], v["cpu-ms/reconcile-list"], v["requests/inventory"], v["cpu-ms/inventory"], v["heap-MiB"]
		}'
}

main "$@"
