#!/bin/sh
# dc-api benchmarks (bench/apibench): signed heartbeats per second and
# p50/p99 latency with 1,000 distinct agents over real HTTP, on SQLite and
# on a throwaway PostgreSQL (initdb/postgres from the machine), next to bare
# Ed25519ph verifications per second on all cores and the ratio of the two;
# then health-summary over 1,000,000 stored checks with its query plan.
# The load generator runs in a child process (apibench re-executed), on the
# same cores: requests are signed before the clock starts and written as raw
# HTTP/1.1 on keep-alive connections, one in flight per connection, answers
# parsed minimally (as wrk does); each agent sends one warm-up heartbeat
# first. Printed: (a) heartbeats/s with that load generator on the same
# cores vs the verify rate ("throughput ratio"); (b) the server's ingest
# capacity from its own CPU time per heartbeat (getrusage of the server's
# process over the timed phase; on PostgreSQL also with the cluster's
# processes from /proc) vs the CPU time per bare verify: (b) is the
# measure that counts; (c) the load generator's CPU per heartbeat.
# Environment: REQUESTS (default 30000 per database), CHECKS (1000000),
# DB (sqlite,postgres), CONCURRENCY (64), LOADGEN_MODE (process; inprocess
# runs the load generator in the server's process, as before).
set -eu

main() {
	cd "$(dirname "$0")/.."
	go run ./bench/apibench \
		-requests "${REQUESTS:-30000}" \
		-checks "${CHECKS:-1000000}" \
		-db "${DB:-sqlite,postgres}" \
		-concurrency "${CONCURRENCY:-64}" \
		-loadgen-mode "${LOADGEN_MODE:-process}"
}

main "$@"
