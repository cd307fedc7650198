// Command apibench measures dc-api (run it through bench/api-server.sh):
//
//   - signed heartbeat ingest over real HTTP on loopback with 1,000 distinct
//     agents (each with its own delegation), on SQLite and on PostgreSQL:
//     requests per second and p50/p99 latency;
//   - in the same run, bare Ed25519ph verifications per second on all cores
//     (the ceiling of any signed-request server), and the ratio;
//   - the server's CPU time per heartbeat (getrusage of this process, where
//     only the server runs during the timed phase: the load generator is a
//     child process, see loadgen.go; on PostgreSQL also the cluster's
//     processes, from /proc) next to the CPU time of one bare verification:
//     the server's ingest capacity on all cores (the measure that counts:
//     in production the agents are remote); and the load generator's CPU
//     per heartbeat;
//   - health-summary answered over 1,000,000 stored checks of one provider
//     (the worst case: all in the 30-day window), with the query plan.
//
// Requests are signed before the clock starts; signing is measured
// separately as its own line.
package main

import (
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/google/uuid"

	"github.com/decent-stuff/dc-agent/apiserver"
	"github.com/decent-stuff/dc-agent/apiserver/store"
	"github.com/decent-stuff/dc-agent/dcapi"
	"github.com/decent-stuff/dc-agent/identity"
	"github.com/decent-stuff/dc-agent/internal/testutil"
)

func main() {
	if len(os.Args) == 2 && os.Args[1] == loadgenArg {
		os.Exit(loadgenMain(os.Stdin, os.Stdout))
	}
	agents := flag.Int("agents", 1000, "distinct agents")
	providers := flag.Int("providers", 50, "providers the agents belong to")
	requests := flag.Int("requests", 30000, "heartbeats per database")
	conc := flag.Int("concurrency", 64, "requests in flight")
	checks := flag.Int("checks", 1_000_000, "health checks stored for the summary benchmark")
	dbs := flag.String("db", "sqlite,postgres", "databases to measure")
	verifyFor := flag.Duration("verify-time", 3*time.Second, "how long to measure bare verification")
	flag.StringVar(&replayCache, "replay-cache", apiserver.ReplayCacheMemory, "dc-api's replay cache: memory or database (shared by every dc-api on the database)")
	flag.StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile of the timed heartbeat phase here (one file per database: PATH.sqlite, PATH.postgres)")
	flag.BoolVar(&varyDetails, "vary-details", false, "every heartbeat of an agent reports a different activeContracts, so the server rewrites the agent's whole status row each time (worst case); by default each agent reports the same details all run, as a real agent does between contract changes")
	mode := flag.String("loadgen-mode", "process", "where the load generator runs: process (a child process, so that the server's CPU is measured alone) or inprocess (goroutines of the server's process, as before: only the combined CPU is known)")
	flag.Parse()
	switch *mode {
	case "process":
	case "inprocess":
		loadMode.inProcess = true
	default:
		fmt.Fprintf(os.Stderr, "apibench: -loadgen-mode %q: use process or inprocess\n", *mode)
		os.Exit(2)
	}
	if _, err := run(*agents, *providers, *requests, *conc, *checks, strings.Split(*dbs, ","), *verifyFor); err != nil {
		fmt.Fprintln(os.Stderr, "apibench:", err)
		os.Exit(1)
	}
}

// cpuProfile is where -cpuprofile writes.
var cpuProfile string

// replayCache is -replay-cache.
var replayCache string

// varyDetails is -vary-details.
var varyDetails bool

// verifyCPUOps is how many bare verifications the CPU time per verification
// is measured over.
var verifyCPUOps = 20000

// loadMode is where the load generator runs (-loadgen-mode).
var loadMode loadgen

// startProfile profiles the timed heartbeat phase of db, if asked to.
func startProfile(db string) (stop func()) {
	if cpuProfile == "" {
		return func() {}
	}
	f, err := os.Create(cpuProfile + "." + db)
	if err != nil {
		fmt.Fprintln(os.Stderr, "apibench: cpu profile:", err)
		return func() {}
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		fmt.Fprintln(os.Stderr, "apibench: cpu profile:", err)
		return func() {}
	}
	return func() { pprof.StopCPUProfile(); f.Close() }
}

func run(nAgents, nProviders, nReq, conc, nChecks int, dbs []string, verifyFor time.Duration) ([]*dbResult, error) {
	fmt.Printf("apibench: %d cores (GOMAXPROCS %d), %d agents of %d providers, %d heartbeats per database, %d in flight\n",
		runtime.NumCPU(), runtime.GOMAXPROCS(0), nAgents, nProviders, nReq, conc)
	fmt.Println("load generator: every heartbeat signed before the clock starts, written as raw HTTP/1.1 on keep-alive connections,")
	fmt.Println("one request in flight per connection, answers read with a minimal parser (like wrk); one warm-up heartbeat per agent first")
	if varyDetails {
		fmt.Println("heartbeat details: every heartbeat of an agent reports another activeContracts (-vary-details: the status row is rewritten each time)")
	} else {
		fmt.Println("heartbeat details: each agent reports the same details all run, as a real agent does between contract changes (-vary-details for the worst case)")
	}
	if loadMode.inProcess {
		fmt.Println("the load generator runs in the server's process (-loadgen-mode=inprocess): the server's CPU cannot be told apart from it")
	} else {
		fmt.Println("the load generator runs in a child process on the same cores; the server's CPU is its process's getrusage over the timed phase")
	}
	sign := measureSign(verifyFor / 2)
	fmt.Printf("ed25519ph sign (bare, all cores, for reference): %.0f /s\n", sign)

	tmp, err := os.MkdirTemp("", "apibench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	var pg *testutil.PostgresServer
	defer func() { _ = pg.Stop() }()

	var results []*dbResult
	for _, db := range dbs {
		var dsn string
		switch db {
		case "sqlite":
			dsn = "sqlite:" + filepath.Join(tmp, "bench.db")
		case "postgres":
			if pg == nil {
				// Durable (fsync on); synchronous_commit off matches SQLite's
				// WAL + synchronous=NORMAL: no corruption on a crash, the
				// last commits may be lost.
				pg, err = testutil.StartPostgres(context.Background(), testutil.PostgresOptions{Durable: true, Settings: []string{"synchronous_commit=off"}})
				if err != nil {
					return nil, err
				}
			}
			if dsn, err = pg.CreateDatabase(context.Background(), "bench"); err != nil {
				return nil, err
			}
		default:
			return nil, fmt.Errorf("unknown database %q", db)
		}
		r, err := benchDB(db, dsn, nAgents, nProviders, nReq, conc, nChecks, verifyFor)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", db, err)
		}
		r.db = db
		results = append(results, r)
	}
	printSummary(results, nChecks)
	return results, nil
}

func printSummary(results []*dbResult, nChecks int) {
	fmt.Println()
	fmt.Println("summary")
	for _, r := range results {
		fmt.Printf("  %-8s (a) throughput, load generator on the same %d cores: %6.0f heartbeats/s (p50 %5.2f ms, p99 %6.2f ms) vs bare Ed25519ph verify %6.0f /s: throughput ratio %4.1f %%\n",
			r.db, r.cores, r.rate, ms(r.p50), ms(r.p99), r.verify, 100*r.rate/r.verify)
		if r.inProcess {
			fmt.Printf("  %-8s (b) CPU per heartbeat %.1f µs (server + load generator in one process) vs per bare verify %.1f µs: CPU ratio %4.1f %%%s\n",
				"", us(r.serverCPU), us(r.verifyCPU), 100*float64(r.verifyCPU)/float64(r.serverCPU), pgNote(r.db))
		} else {
			fmt.Printf("  %-8s (b) server ingest capacity: %d cores / %.1f µs server CPU per heartbeat = %6.0f /s vs verify ceiling %d cores / %.1f µs per bare verify = %6.0f /s: %4.1f %% of the verify ceiling%s\n",
				"", r.cores, us(r.serverCPU), r.capacity(r.serverCPU), r.cores, us(r.verifyCPU), r.ceilingCPU(), 100*r.capacity(r.serverCPU)/r.ceilingCPU(), pgNote(r.db))
			fmt.Printf("  %-8s     against a verify with the key already decoded (%.1f µs, as dc-api verifies known keys): %4.1f %%\n",
				"", us(r.decodedCPU), 100*float64(r.decodedCPU)/float64(r.serverCPU))
			if r.pgCPU > 0 {
				all := r.serverCPU + r.pgCPU
				fmt.Printf("  %-8s     with PostgreSQL's processes (+%.1f µs): %d cores / %.1f µs = %6.0f /s: %4.1f %% of the verify ceiling\n",
					"", us(r.pgCPU), r.cores, us(all), r.capacity(all), 100*r.capacity(all)/r.ceilingCPU())
			}
			fmt.Printf("  %-8s (c) load generator CPU per heartbeat: %.1f µs (its own process: in production the agents are remote)\n", "", us(r.loadCPU))
		}
		fmt.Printf("  %-8s health-summary over %d checks p50 %.2f ms\n", "", nChecks, ms(r.summaryP50))
	}
	if len(results) > 0 && !results[0].inProcess {
		fmt.Println("(b) is the measure that counts (the heartbeat-ingest target of 50 % was retired with the HTTP fast path): it is the")
		fmt.Println("server's capacity, and in production the agents are remote, so the load generator's CPU is not the server's. (b) assumes")
		fmt.Println("the server's CPU per heartbeat stays the same with both cores to itself. (a) is lower because the load generator takes")
		fmt.Println("its share (c) of the same two cores.")
	}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

type dbResult struct {
	db         string
	rate       float64 // heartbeats/s with the load generator on the same cores
	verify     float64 // bare verifications/s on all cores
	p50, p99   time.Duration
	summaryP50 time.Duration
	// CPU time per operation (getrusage).
	verifyCPU time.Duration // one bare verification
	// decodedCPU is one verification with the key already decoded
	// (identity.Verifier), the way dc-api verifies known keys.
	decodedCPU time.Duration
	serverCPU  time.Duration // the server's process per heartbeat (with the load generator's if inProcess)
	loadCPU    time.Duration // the load generator's process per heartbeat (0 if inProcess)
	pgCPU      time.Duration // PostgreSQL's processes per heartbeat (0 if not measured)
	inProcess  bool
	cores      int
}

// ceilingCPU is the verify ceiling from the CPU time of one verification:
// all cores doing nothing else.
func (r *dbResult) ceilingCPU() float64 {
	return float64(r.cores) / r.verifyCPU.Seconds()
}

// capacity is the heartbeats/s all cores give at perHB CPU each.
func (r *dbResult) capacity(perHB time.Duration) float64 {
	return float64(r.cores) / perHB.Seconds()
}

func pgNote(db string) string {
	if db == "postgres" {
		return "; PostgreSQL's own processes not included"
	}
	return ""
}

func benchDB(name, dsn string, nAgents, nProviders, nReq, conc, nChecks int, verifyFor time.Duration) (*dbResult, error) {
	ctx := context.Background()
	st, err := store.Open(ctx, dsn, store.Options{MaxReadConns: 16})
	if err != nil {
		return nil, err
	}
	defer st.Close()
	srv, err := apiserver.New(apiserver.Config{Store: st, RateLimit: -1, Logger: slog.New(slog.DiscardHandler), ReplayCache: replayCache})
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	sctx, stop := context.WithCancel(ctx)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(sctx, ln, 5*time.Second) }()
	defer func() { stop(); <-served }()
	base := "http://" + ln.Addr().String()

	// Seed providers and delegated agents.
	type agent struct {
		key      ed25519.PrivateKey
		provider string
	}
	now := time.Now().UnixNano()
	provs := make([]ed25519.PrivateKey, nProviders)
	for i := range provs {
		provs[i], _ = identity.GenerateKey()
		if _, err := st.AddProvider(ctx, identity.PublicHex(provs[i]), fmt.Sprintf("bench-%d", i), now); err != nil {
			return nil, err
		}
	}
	agents := make([]agent, nAgents)
	for i := range agents {
		k, _ := identity.GenerateKey()
		p := provs[i%nProviders]
		sd, err := identity.Delegation{AgentPubkey: identity.PublicHex(k), ProviderPubkey: identity.PublicHex(p), Permissions: identity.AllPermissions}.Sign(p)
		if err != nil {
			return nil, err
		}
		if _, _, err := st.PutDelegation(ctx, sd, false, now); err != nil {
			return nil, err
		}
		agents[i] = agent{k, identity.PublicHex(p)}
	}

	// The load generator (a child process unless -loadgen-mode=inprocess)
	// signs every heartbeat before the clock starts, opens the connections
	// and sends one warm-up heartbeat per agent; then, while it waits, the
	// verify ceiling is measured (right before and right after the run,
	// averaged, so that both figures see the same machine); then the timed
	// phase, bracketed here by the server's CPU time (getrusage of this
	// process, where only the server runs then) and, on PostgreSQL, the CPU
	// time of the cluster's processes.
	spec := loadSpec{Addr: ln.Addr().String(), Requests: nReq, Concurrency: conc, VaryDetails: varyDetails}
	for _, a := range agents {
		spec.Agents = append(spec.Agents, loadAgent{Seed: hex.EncodeToString(a.key.Seed()), Provider: a.provider})
	}
	var (
		verifyBefore float64
		verifyCPU    time.Duration
		decodedCPU   time.Duration
		stopProfile  func()
		wall0        time.Time
		wall         time.Duration
		cpu0, cpu1   time.Duration
		pg0, pg1     time.Duration
		pgProcs      int
		pgOK         bool
	)
	lr, err := loadMode.run(ctx, spec,
		func() {
			verifyBefore = measureVerify(verifyFor / 2)
			verifyCPU = cpuPerOp(func() int { return measureVerifyN(verifyCPUOps, false) })
			decodedCPU = cpuPerOp(func() int { return measureVerifyN(verifyCPUOps, true) })
		},
		func() {
			if name == "postgres" {
				pg0, _, pgOK = pgCPU()
			}
			stopProfile = startProfile(name)
			wall0 = time.Now()
			cpu0 = cpuTime()
		},
		func() {
			cpu1 = cpuTime()
			wall = time.Since(wall0)
			stopProfile()
			if pgOK {
				var ok bool
				pg1, pgProcs, ok = pgCPU()
				pgOK = pgOK && ok
			}
		})
	if err != nil {
		return nil, err
	}
	if lr.Count != nReq {
		return nil, fmt.Errorf("load generator reports %d heartbeats, %d asked for", lr.Count, nReq)
	}
	verifyAfter := measureVerify(verifyFor / 2)
	verifyCPUBefore := verifyCPU
	verifyCPUAfter := cpuPerOp(func() int { return measureVerifyN(verifyCPUOps, false) })
	verifyCPU = (verifyCPUBefore + verifyCPUAfter) / 2
	decodedCPU = (decodedCPU + cpuPerOp(func() int { return measureVerifyN(verifyCPUOps, true) })) / 2
	cores := runtime.NumCPU()
	res := &dbResult{
		rate: float64(nReq) / lr.Elapsed.Seconds(), p50: lr.P50, p99: lr.P99, verify: (verifyBefore + verifyAfter) / 2,
		verifyCPU: verifyCPU, decodedCPU: decodedCPU, serverCPU: (cpu1 - cpu0) / time.Duration(nReq), loadCPU: lr.CPU / time.Duration(nReq),
		inProcess: lr.InProcess, cores: cores,
	}
	if pgOK {
		res.pgCPU = (pg1 - pg0) / time.Duration(nReq)
	}
	where := fmt.Sprintf("load generator in its own process (pid %d) on the same %d cores", lr.Pid, cores)
	if lr.InProcess {
		where = "load generator in the server's process"
	}
	fmt.Printf("\n[%s] %d signed heartbeats from %d agents in %.2f s (%s): %.0f /s, p50 %.2f ms, p99 %.2f ms\n",
		name, nReq, nAgents, lr.Elapsed.Seconds(), where, res.rate, ms(res.p50), ms(res.p99))
	fmt.Printf("[%s] bare Ed25519ph verify on all cores: %.0f /s before, %.0f /s after the run -> throughput ratio %.1f %% (load generator on the same cores)\n",
		name, verifyBefore, verifyAfter, 100*res.rate/res.verify)
	// CPU time per operation is steadier than rates on a shared machine.
	fmt.Printf("[%s] bare verify: %.1f µs CPU each before, %.1f µs after the run (getrusage over %d verifications on all cores) -> verify ceiling %d cores / %.1f µs = %.0f /s\n",
		name, us(verifyCPUBefore), us(verifyCPUAfter), verifyCPUOps, cores, us(verifyCPU), res.ceilingCPU())
	if lr.InProcess {
		fmt.Printf("[%s] CPU per signed heartbeat %.1f µs (server + load generator, one process: not separable%s) -> CPU ratio %.1f %%\n",
			name, us(res.serverCPU), pgNote(name), 100*float64(verifyCPU)/float64(res.serverCPU))
	} else {
		fmt.Printf("[%s] CPU per signed heartbeat over the timed phase (%.2f s as the server saw it): server (dc-api process) %.1f µs; load generator (its process) %.1f µs\n",
			name, wall.Seconds(), us(res.serverCPU), us(res.loadCPU))
		fmt.Printf("[%s] server ingest capacity = %d cores / %.1f µs per heartbeat = %.0f /s -> %.1f %% of the verify ceiling%s\n",
			name, cores, us(res.serverCPU), res.capacity(res.serverCPU), 100*res.capacity(res.serverCPU)/res.ceilingCPU(), pgNote(name))
		fmt.Printf("[%s] for comparison, a verify with the key already decoded (identity.Verifier, as dc-api verifies known keys): %.1f µs CPU -> capacity %.1f %% of that ceiling\n",
			name, us(res.decodedCPU), 100*float64(res.decodedCPU)/float64(res.serverCPU))
		if name == "postgres" {
			if pgOK {
				all := res.serverCPU + res.pgCPU
				fmt.Printf("[%s] with PostgreSQL's own processes (%d, /proc/PID/schedstat): +%.1f µs -> %.1f µs per heartbeat: capacity %d cores / %.1f µs = %.0f /s -> %.1f %% of the verify ceiling\n",
					name, pgProcs, us(res.pgCPU), us(all), cores, us(all), res.capacity(all), 100*res.capacity(all)/res.ceilingCPU())
			} else {
				fmt.Printf("[%s] PostgreSQL's own processes' CPU could not be read from /proc: the figures above exclude it\n", name)
			}
		}
	}
	var stored int
	if err := st.DB().QueryRow(`SELECT COUNT(*) FROM provider_agent_status`).Scan(&stored); err != nil || stored != nAgents {
		return nil, fmt.Errorf("expected %d agent rows after the run, found %d (%v)", nAgents, stored, err)
	}

	// Health summary over nChecks checks of one provider.
	hc := &http.Client{Timeout: 30 * time.Second}
	prov := agents[0].provider
	if err := seedChecks(ctx, st, prov, identity.PublicHex(agents[0].key), nChecks); err != nil {
		return nil, err
	}
	var sum dcapi.HealthSummary
	var slat []time.Duration
	for i := 0; i < 30; i++ {
		t0 := time.Now()
		resp, err := hc.Get(base + dcapi.APIPrefix + "/providers/" + prov + "/health-summary?days=30")
		if err != nil {
			return nil, err
		}
		var env dcapi.Envelope[dcapi.HealthSummary]
		err = json.NewDecoder(resp.Body).Decode(&env)
		resp.Body.Close()
		if err != nil || !env.Success {
			return nil, fmt.Errorf("health-summary: %v %s", err, env.Error)
		}
		slat = append(slat, time.Since(t0))
		sum = env.Data
	}
	slices.Sort(slat)
	res.summaryP50 = slat[len(slat)/2]
	fmt.Printf("[%s] health-summary?days=30 over %d stored checks: p50 %.2f ms, max %.2f ms (HTTP round trip) -> %d checks, uptime %.3f %%, %d contracts\n",
		name, nChecks, ms(res.summaryP50), ms(slat[len(slat)-1]), sum.TotalChecks, sum.UptimePercent, sum.ContractsMonitored)
	if sum.TotalChecks != int64(nChecks) {
		return nil, fmt.Errorf("summary counted %d checks, %d stored", sum.TotalChecks, nChecks)
	}
	// The same figure straight from the raw rows, for contrast.
	t0 := time.Now()
	var raw int64
	if err := st.DB().QueryRow(rebind(st, `SELECT COUNT(*) FROM contract_health_checks WHERE provider_pubkey = ? AND checked_at_ns >= ? AND status = 'healthy'`),
		prov, sum.PeriodStartNs).Scan(&raw); err != nil {
		return nil, err
	}
	fmt.Printf("[%s] for contrast, counting the raw rows through idx_health_provider_time: %.1f ms (%d healthy; roll-up says %d)\n",
		name, ms(time.Since(t0)), raw, sum.HealthyChecks)
	if raw != sum.HealthyChecks {
		return nil, fmt.Errorf("roll-up (%d healthy) disagrees with the raw rows (%d)", sum.HealthyChecks, raw)
	}
	return res, printPlan(st, prov, sum.PeriodStartNs)
}

func rebind(st *store.Store, q string) string {
	if st.Dialect() != store.Postgres {
		return q
	}
	n := 0
	var b strings.Builder
	for _, c := range q {
		if c == '?' {
			n++
			fmt.Fprintf(&b, "$%d", n)
			continue
		}
		b.WriteRune(c)
	}
	return b.String()
}

func printPlan(st *store.Store, prov string, start int64) error {
	explain := "EXPLAIN QUERY PLAN "
	if st.Dialect() == store.Postgres {
		explain = "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) "
	}
	for _, q := range []string{store.SummaryQuery, store.MonitoredQuery} {
		rows, err := st.DB().Query(explain+rebind(st, q), prov, start)
		if err != nil {
			return fmt.Errorf("explain: %w", err)
		}
		cols, _ := rows.Columns()
		fmt.Printf("  plan of %s\n", strings.Join(strings.Fields(q), " "))
		for rows.Next() {
			vals := make([]any, len(cols))
			ptrs := make([]any, len(cols))
			for i := range vals {
				ptrs[i] = &vals[i]
			}
			if err := rows.Scan(ptrs...); err != nil {
				rows.Close()
				return err
			}
			fmt.Printf("    %v\n", vals[len(vals)-1])
		}
		rows.Close()
	}
	return nil
}

// seedChecks stores n health checks for 100 provisioned contracts of prov,
// spread over the last 30 days, in bulk SQL (the insert path is not what is
// measured), then builds the hourly roll-up and last-check columns the same
// way InsertHealthChecks maintains them.
func seedChecks(ctx context.Context, st *store.Store, prov, agent string, n int) error {
	t0 := time.Now()
	now := time.Now().UnixNano()
	db := st.DB()
	const nContracts = 100
	var ids []string
	for i := 0; i < nContracts; i++ {
		c, err := st.CreateContract(ctx, store.NewContract{ProviderPubkey: prov, RequesterSSHPubkey: "ssh-ed25519 AAAA bench"}, now)
		if err != nil {
			return err
		}
		ids = append(ids, c.ContractID)
		if _, err := st.UpdateProvisioning(ctx, prov, c.ContractID, agent, dcapi.ProvisioningUpdate{Status: dcapi.StatusProvisioning}, now); err != nil {
			return err
		}
		u, _ := dcapi.ProvisionedUpdate(dcapi.InstanceDetails{ExternalID: "vm-" + strconv.Itoa(i)})
		if _, err := st.UpdateProvisioning(ctx, prov, c.ContractID, agent, u, now); err != nil {
			return err
		}
	}
	step := int64(30*24*time.Hour-time.Hour) / int64(n)
	if st.Dialect() == store.SQLite {
		// The bulk insert touches both indexes all over: give the (single)
		// write connection a cache that holds them.
		if _, err := db.Exec(`PRAGMA cache_size = -262144`); err != nil {
			return err
		}
		defer db.Exec(`PRAGMA cache_size = -2000`)
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if _, err := tx.Exec(`CREATE TEMP TABLE bench_cids (k BIGINT PRIMARY KEY, id TEXT NOT NULL)`); err != nil {
		return err
	}
	for i, id := range ids {
		if _, err := tx.Exec(rebind(st, `INSERT INTO bench_cids (k, id) VALUES (?, ?)`), i, id); err != nil {
			return err
		}
	}
	series := `WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < ? - 1) SELECT i FROM n`
	if st.Dialect() == store.Postgres {
		series = `SELECT generate_series(CAST(0 AS BIGINT), CAST(? AS BIGINT) - 1) AS i`
	}
	ins := `INSERT INTO contract_health_checks (contract_id, provider_pubkey, agent_pubkey, status, checked_at_ns, latency_ms, details, received_at_ns)
		SELECT c.id, ?, ?, CASE WHEN s.i % 200 = 7 THEN 'unhealthy' WHEN s.i % 997 = 3 THEN 'unknown' ELSE 'healthy' END,
			CAST(? AS BIGINT) - s.i * CAST(? AS BIGINT), s.i % 50, NULL, CAST(? AS BIGINT)
		FROM (` + series + `) s JOIN bench_cids c ON c.k = s.i % ` + strconv.Itoa(nContracts)
	if _, err := tx.Exec(rebind(st, ins), prov, agent, now, step, now, n); err != nil {
		return fmt.Errorf("seed checks: %w", err)
	}
	if _, err := tx.Exec(rebind(st, `INSERT INTO provider_health_hourly (provider_pubkey, hour_start_ns, total, healthy, unhealthy, unknown, latency_sum, latency_count)
		SELECT provider_pubkey, checked_at_ns / 3600000000000 * 3600000000000, COUNT(*),
			SUM(CASE WHEN status = 'healthy' THEN 1 ELSE 0 END), SUM(CASE WHEN status = 'unhealthy' THEN 1 ELSE 0 END),
			SUM(CASE WHEN status = 'unknown' THEN 1 ELSE 0 END), COALESCE(SUM(latency_ms), 0), COUNT(latency_ms)
		FROM contract_health_checks WHERE provider_pubkey = ?
		GROUP BY provider_pubkey, checked_at_ns / 3600000000000 * 3600000000000`), prov); err != nil {
		return fmt.Errorf("seed roll-up: %w", err)
	}
	if _, err := tx.Exec(rebind(st, `UPDATE contracts SET last_health_check_ns = ?, last_health_status = 'healthy', status = 'active' WHERE provider_pubkey = ?`), now, prov); err != nil {
		return err
	}
	if _, err := tx.Exec(`DROP TABLE bench_cids`); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return err
	}
	analyze := "ANALYZE"
	if _, err := db.Exec(analyze); err != nil {
		return err
	}
	fmt.Printf("[%s] seeded %d health checks of one provider (100 contracts, 30 days) in %.1f s\n", st.Dialect(), n, time.Since(t0).Seconds())
	return nil
}

// measureVerify runs Ed25519ph verifications of heartbeat-sized requests on
// every core for d and returns verifications per second.
func measureVerify(d time.Duration) float64 {
	type item struct {
		pub ed25519.PublicKey
		msg []byte
		sig []byte
	}
	items := make([]item, 256)
	for i := range items {
		k, _ := identity.GenerateKey()
		body := []byte(`{"version":"0.9.0","provisionerType":"proxmox","capabilities":["vm"],"activeContracts":3}`)
		msg := identity.RequestMessage(strconv.FormatInt(time.Now().UnixNano(), 10), uuid.NewString(), "POST",
			"/api/v1/providers/"+hex.EncodeToString(make([]byte, 32))+"/heartbeat", body)
		items[i] = item{k.Public().(ed25519.PublicKey), msg, identity.Sign(k, msg)}
	}
	return parallelRate(d, func(i int) bool {
		it := items[i%len(items)]
		return identity.Verify(it.pub, it.msg, it.sig)
	})
}

// measureVerifyN runs n verifications on all cores and returns n: bare
// ones (crypto/ed25519, the key decoded each time) or, if decoded, with the
// key decoded once (identity.Verifier, as dc-api keeps known keys).
func measureVerifyN(n int, decoded bool) int {
	k, _ := identity.GenerateKey()
	body := []byte(`{"version":"0.9.0","provisionerType":"proxmox","capabilities":["vm"],"activeContracts":3}`)
	msg := identity.RequestMessage(strconv.FormatInt(time.Now().UnixNano(), 10), uuid.NewString(), "POST",
		"/api/v1/providers/"+hex.EncodeToString(make([]byte, 32))+"/heartbeat", body)
	sig := identity.Sign(k, msg)
	pub := k.Public().(ed25519.PublicKey)
	verify := func() bool { return identity.Verify(pub, msg, sig) }
	if decoded {
		v, err := identity.NewVerifier(pub)
		if err != nil {
			panic(err)
		}
		verify = func() bool { return v.Verify(msg, sig) }
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < runtime.GOMAXPROCS(0); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(n) {
				if !verify() {
					panic(errors.New("a verification failed"))
				}
			}
		}()
	}
	wg.Wait()
	return n
}

// cpuPerOp is the process CPU time (user + system) per operation of f,
// which returns how many it did.
func cpuPerOp(f func() int) time.Duration {
	t0 := cpuTime()
	n := f()
	return (cpuTime() - t0) / time.Duration(n)
}

// cpuTime is the process's user + system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

func measureSign(d time.Duration) float64 {
	k, _ := identity.GenerateKey()
	msg := []byte(`1700000000000000000123e4567-e89b-42d3-a456-426614174000POST/api/v1/providers/x/heartbeat{"version":"0.9.0"}`)
	return parallelRate(d, func(int) bool { return len(identity.Sign(k, msg)) == 64 })
}

func parallelRate(d time.Duration, op func(i int) bool) float64 {
	var total atomic.Int64
	var bad atomic.Bool
	deadline := time.Now().Add(d)
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < runtime.GOMAXPROCS(0); w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			n := 0
			for i := w; ; i++ {
				if !op(i) {
					bad.Store(true)
				}
				n++
				if n%64 == 0 && time.Now().After(deadline) {
					break
				}
			}
			total.Add(int64(n))
		}(w)
	}
	wg.Wait()
	if bad.Load() {
		panic(errors.New("a verification failed"))
	}
	return float64(total.Load()) / time.Since(start).Seconds()
}
