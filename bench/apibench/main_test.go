package main

import (
	"bytes"
	"context"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/decent-stuff/dc-agent/internal/testutil"
)

// TestMain lets this test binary be the load generator child, as the
// apibench binary is (loadgenCmd re-executes os.Executable()).
func TestMain(m *testing.M) {
	if len(os.Args) == 2 && os.Args[1] == loadgenArg {
		os.Exit(loadgenMain(os.Stdin, os.Stdout))
	}
	verifyCPUOps = 200
	os.Exit(m.Run())
}

// smallRun runs the whole benchmark on a tiny workload.
func smallRun(t *testing.T, inProcess bool, dbs ...string) []*dbResult {
	t.Helper()
	loadMode = loadgen{inProcess: inProcess}
	t.Cleanup(func() { loadMode = loadgen{} })
	const reqs = 300
	res, err := run(20, 5, reqs, 8, 200, dbs, 100*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != len(dbs) {
		t.Fatalf("%d results for %v", len(res), dbs)
	}
	for i, r := range res {
		if r.db != dbs[i] || r.rate <= 0 || r.verify <= 0 || r.verifyCPU <= 0 || r.serverCPU <= 0 || r.p50 <= 0 || r.p99 < r.p50 || r.cores < 1 || r.inProcess != inProcess {
			t.Errorf("implausible result %+v", *r)
		}
	}
	return res
}

func TestLoadGeneratorInChildProcess(t *testing.T) {
	r := smallRun(t, false, "sqlite")[0]
	if r.loadCPU <= 0 {
		t.Errorf("the load generator's CPU per heartbeat was not reported: %+v", *r)
	}
	if r.pgCPU != 0 {
		t.Errorf("PostgreSQL CPU counted on SQLite: %v", r.pgCPU)
	}
}

func TestLoadGeneratorInProcess(t *testing.T) {
	r := smallRun(t, true, "sqlite")[0]
	if r.loadCPU != 0 {
		t.Errorf("in process, the load generator's CPU cannot be told apart, yet %v was reported", r.loadCPU)
	}
}

func TestPostgresCountsItsProcesses(t *testing.T) {
	testutil.RequireBinary(t, "initdb")
	testutil.RequireBinary(t, "postgres")
	r := smallRun(t, false, "postgres")[0]
	if r.pgCPU <= 0 {
		t.Errorf("no CPU time of PostgreSQL's processes over the timed phase: %+v", *r)
	}
	if _, _, ok := pgCPU(); ok {
		t.Error("pgCPU still finds a cluster after the run stopped it")
	}
}

// The child's only argument is the hidden flag: agent seeds go through its
// stdin, never argv.
func TestLoadgenCommandLine(t *testing.T) {
	cmd, err := loadgenCmd(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(cmd.Args[1:], []string{loadgenArg}) {
		t.Errorf("load generator argv %q", cmd.Args)
	}
}

func TestLoadgenRejectsBadSpecs(t *testing.T) {
	for _, tc := range []struct{ name, in string }{
		{"empty", ""},
		{"not JSON", "seeds please\n"},
		{"no agents", `{"addr":"127.0.0.1:1","requests":1,"concurrency":1}` + "\n"},
		{"bad seed", `{"addr":"127.0.0.1:1","agents":[{"seed":"zz","provider":"ab"}],"requests":1,"concurrency":1}` + "\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			if code := loadgenMain(strings.NewReader(tc.in), &out); code == 0 {
				t.Errorf("exit 0 for %q", tc.in)
			}
			if out.Len() != 0 {
				t.Errorf("stdout %q", out.String())
			}
		})
	}
}
