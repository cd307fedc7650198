package bench

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/decent-stuff/dc-agent/apiserver/apitest"
	"github.com/decent-stuff/dc-agent/dcapi"
	"github.com/decent-stuff/dc-agent/identity"
	"github.com/decent-stuff/dc-agent/internal/sim/pve"
	"github.com/decent-stuff/dc-agent/internal/sim/pveapi"
	"github.com/decent-stuff/dc-agent/internal/testutil"
	"github.com/decent-stuff/dc-agent/provisioners"
)

// BenchmarkThousandContractsAgent: the real dc-agent binary (release
// build) serving 1,000 provisioned contracts on a simulated 3-node
// Proxmox cluster, health checks and reconcile every 10 s, heartbeat as
// the server asks (10 s). After a warm-up (every contract health-checked
// once) it is measured over a window: RSS (now and peak), CPU, and the
// requests it sent to the API and to Proxmox, per health round.
//
//	go test -run '^$' -bench BenchmarkThousandContractsAgent -benchtime 1x ./bench/
func BenchmarkThousandContractsAgent(b *testing.B) {
	const n = 1000
	window := 60 * time.Second
	if quick() {
		window = 20 * time.Second
	}
	for i := 0; i < b.N; i++ {
		srv := apitest.Start(b, apitest.WithNextHeartbeat(10))
		prov := srv.NewProvider("Thousand Hosting")
		key := srv.NewAgent(prov)
		dir := b.TempDir()
		bin, err := goBuild(dir, "github.com/decent-stuff/dc-agent/cmd/dc-agent", "dc-agent")
		if err != nil {
			b.Fatal(err)
		}
		tm := pve.FastTiming()
		sim := pveapi.StartTest(b, pveapi.TestOptions{Timing: &tm, Nodes: 3, SharedStorage: true, TemplateStorage: pve.SharedStorageID})
		cids := seedThousand(b, srv, prov, key, sim, n)

		kp := filepath.Join(dir, "agent.key")
		if err := identity.SaveAgentKey(kp, key, false); err != nil {
			b.Fatal(err)
		}
		sock := testutil.ShortDir(b)
		cfg := filepath.Join(dir, "dc-agent.toml")
		testutil.AgentTOML{Endpoint: srv.URL, ProviderPubkey: prov.Pubkey, AgentKey: kp,
			Polling: `interval_seconds = 30
health_check_interval_seconds = 10
reconcile_interval_seconds = 10`,
			StateDir: filepath.Join(dir, "state"), StatusSocket: filepath.Join(sock, "s.sock"),
			Rest: sim.ProvisionerTOML(b, filepath.Join(dir, "pve-token"), `nodes = "auto"`)}.Write(b, cfg)
		cmd := exec.Command(bin, "run", "--config", cfg)
		cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir}
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		pid := cmd.Process.Pid

		// Warm-up: every contract health-checked once.
		deadline := time.Now().Add(3 * time.Minute)
		for srv.CountRequests("POST", "/health", 200) == 0 || !allChecked(srv, cids) {
			if time.Now().After(deadline) {
				b.Fatal("the first health round did not cover every contract")
			}
			time.Sleep(200 * time.Millisecond)
		}
		var rounds0, api0 int
		var pve0 int64
		w := watchProcess(b, pid, window, func() {
			rounds0, api0, pve0 = srv.CountRequests("GET", "/contracts/active", 0), len(srv.Requests("", "")), sim.Server.Requests()
		})
		rounds := srv.CountRequests("GET", "/contracts/active", 0) - rounds0
		apiReqs, pveReqs := len(srv.Requests("", ""))-api0, sim.Server.Requests()-pve0
		elapsed, rss, hwm := w.elapsed, w.rssKiB, w.hwmKiB
		if rounds == 0 {
			b.Fatal("no health round in the window")
		}
		cpuMs := float64(w.cpu.Milliseconds())
		perRound := func(v float64) float64 { return v / float64(rounds) }
		b.ReportMetric(float64(rss)/1024, "RSS-MiB")
		b.ReportMetric(float64(hwm)/1024, "peak-RSS-MiB")
		b.ReportMetric(perRound(cpuMs), "cpu-ms/round")
		b.ReportMetric(perRound(float64(apiReqs)), "api-req/round")
		b.ReportMetric(perRound(float64(pveReqs)), "pve-req/round")
		fmt.Printf("dc-agent with %d contracts over %s: %d health rounds (with reconcile and heartbeat alongside); RSS %.1f MiB (peak %.1f MiB, target < 40); per round: CPU %.0f ms, %.1f API requests, %.1f Proxmox requests\n",
			n, elapsed.Round(time.Second), rounds, float64(rss)/1024, float64(hwm)/1024, perRound(cpuMs), perRound(float64(apiReqs)), perRound(float64(pveReqs)))
		fmt.Printf("Proxmox calls since the agent started, by endpoint: %s\n", sim.Server.CallsReport())
	}
}

// seedThousand makes n running VMs spread over the cluster's nodes and n
// contracts provisioned on them (as the agent would have reported them).
func seedThousand(b *testing.B, srv *apitest.Server, prov *apitest.Provider, key ed25519.PrivateKey, sim *pveapi.TestSim, n int) []string {
	b.Helper()
	ctx := context.Background()
	agentHex := identity.PublicHex(key)
	var cids []string
	for i := 0; i < n; i++ {
		cids = append(cids, srv.CreateContract(prov, apitest.ContractSpec{MemoryAmount: apitest.Ptr("1 GB")}))
	}
	ext := map[string]string{}
	sim.Update(b, func(st *pve.State) error {
		for i, cid := range cids {
			vmid, node := 1000+i, fmt.Sprintf("pve%d", i%3+1)
			st.VMs[vmid] = &pve.VM{VMID: vmid, Node: node, Status: "running", PID: 10000 + i, StartedAt: time.Now(),
				Config: map[string]string{"name": provisioners.InstanceName(cid), "memory": "1024", "cores": "1", "tags": "dc-agent"}}
			ext[cid] = fmt.Sprintf("%s/%d", node, vmid)
		}
		return nil
	})
	now := srv.Now().UnixNano()
	for _, cid := range cids {
		if _, err := srv.Store.UpdateProvisioning(ctx, prov.Pubkey, cid, agentHex, dcapi.ProvisioningUpdate{Status: dcapi.StatusProvisioning}, now); err != nil {
			b.Fatal(err)
		}
		u, err := dcapi.ProvisionedUpdate(dcapi.InstanceDetails{ExternalID: ext[cid], IPAddress: "10.0.0.1", SSHPort: 22})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := srv.Store.UpdateProvisioning(ctx, prov.Pubkey, cid, agentHex, u, now); err != nil {
			b.Fatal(err)
		}
	}
	return cids
}

// allChecked reports whether every contract has a health record.
func allChecked(srv *apitest.Server, cids []string) bool {
	for _, cid := range cids {
		if len(srv.HealthChecks(cid)) == 0 {
			return false
		}
	}
	return true
}
