#!/bin/sh
# dc-api benchmarks (bench/apibench): signed heartbeats per second and
# p50/p99 latency with 1,000 distinct agents over real HTTP, on SQLite and
# on a throwaway PostgreSQL (initdb/postgres from the machine), next to bare
# Ed25519ph verifications per second on all cores and the ratio of the two;
# then health-summary over 1,000,000 stored checks with its query plan.
# The load generator runs in the same process, on the same cores: requests
# are signed before the clock starts and written as raw HTTP/1.1 on
# keep-alive connections, one in flight per connection, answers parsed
# minimally (as wrk does); each agent sends one warm-up heartbeat first.
# Environment: REQUESTS (default 30000 per database), CHECKS (1000000),
# DB (sqlite,postgres), CONCURRENCY (64).
set -eu

main() {
	cd "$(dirname "$0")/.."
	go run ./bench/apibench \
		-requests "${REQUESTS:-30000}" \
		-checks "${CHECKS:-1000000}" \
		-db "${DB:-sqlite,postgres}" \
		-concurrency "${CONCURRENCY:-64}"
}

main "$@"
