#!/bin/sh
# DigitalOcean droplets and Vultr instances provisioned per minute against
# the simulators' documented timings (create ~55 s, deploy ~60 s; run 100x
# faster), with 1 and 4 provisions in flight, and API calls per provision
# with the ceiling the APIs' rate limits put on provisions per minute
# (provisioners/{digitalocean,vultr} BenchmarkProvision). N is the number
# of provisions per concurrency level (default 8); POLL_MS the poll
# interval (default: the config default, 5000).
set -eu

main() {
	n="${N:-8}"
	cd "$(dirname "$0")/.."
	for pkg in digitalocean vultr; do
		out="$(go test -run '^$' -bench '^BenchmarkProvision$' -benchtime "${n}x" -count 1 "./provisioners/$pkg/")"
		printf '%s\n' "$out"
		printf '%s\n' "$out" | awk -v name="$pkg" '
			/^BenchmarkProvision\/concurrency=/ {
				split($1, a, "="); c = a[2]; sub(/-[0-9]+$/, "", c)
				for (i = 2; i <= NF; i++) {
					if ($(i) == "provisions/min") rate[c] = $(i-1)
					if ($(i) == "calls/provision") calls[c] = $(i-1)
					if ($(i) == "ratelimit-max-provisions/min") cap[c] = $(i-1)
				}
			}
			END {
				if (rate[1] == "" || rate[4] == "") { print "no figures (benchmark failed?)"; exit 1 }
				printf "%s provision: concurrency 1: %.2f/min, concurrency 4: %.2f/min (x%.2f); %.1f API calls per provision; rate limits allow %.1f provisions/min\n",
					name, rate[1], rate[4], rate[4] / rate[1], calls[4], cap[4]
			}'
	done
}

main "$@"
