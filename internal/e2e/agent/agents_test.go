package agente2e

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/decent-stuff/dc-agent/dcapi"
	"github.com/decent-stuff/dc-agent/identity"
	"github.com/decent-stuff/dc-agent/internal/e2e/e2eutil"
)

// TestStatusListsProviderAgents (issue 18): with two agents of one
// provider, `dc-agent status` lists both from dc-api's agent-status, this
// agent marked; against the live profile (one status per provider, no
// list) it shows nothing extra and says nothing on stderr.
func TestStatusListsProviderAgents(t *testing.T) {
	eachProfile(t, func(t *testing.T, p e2eutil.Profile) {
		w := newWorld(t, withProfile(p))
		// The second agent of the provider: its own key, last heard of
		// 10 minutes ago.
		other := identity.PublicHex(w.srv.NewAgent(w.prov))
		hb := dcapi.Heartbeat{Version: "0.9.0", ProvisionerType: "proxmox", ActiveContracts: 7}
		if err := w.srv.Store.RecordHeartbeat(context.Background(), w.prov.Pubkey, other, hb, w.srv.Now().Add(-10*time.Minute).UnixNano()); err != nil {
			t.Fatal(err)
		}
		w.startAgent(nil)
		eventually(t, 10*time.Second, "online", func() bool { st, err := w.state(); return err == nil && st.Online })

		status := func(args ...string) string {
			cmd := exec.Command(dcAgent, append([]string{"status", "--config", w.cfgPath}, args...)...)
			cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(), "LANG=C.UTF-8"}
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			if err := cmd.Run(); err != nil {
				t.Fatalf("dc-agent status %v: %v\n%s%s", args, err, stdout.String(), stderr.String())
			}
			if stderr.Len() > 0 {
				t.Errorf("stderr: %s", stderr.String())
			}
			return stdout.String()
		}
		out := status()
		var js struct {
			Provider       string                `json:"provider"`
			ProviderAgents []dcapi.ProviderAgent `json:"providerAgents"`
		}
		if err := json.Unmarshal([]byte(status("--json")), &js); err != nil || js.Provider != w.prov.Pubkey {
			t.Fatalf("status --json: %v %+v", err, js)
		}
		if p.Live {
			if strings.Contains(out, "agents of this provider") || js.ProviderAgents != nil {
				t.Fatalf("the live API lists no agents, yet:\n%s\n%+v", out, js.ProviderAgents)
			}
			return
		}
		self := identity.PublicHex(w.agentKey)[:8]
		if a := js.ProviderAgents; len(a) != 2 || !slices.ContainsFunc(a, func(x dcapi.ProviderAgent) bool { return x.KeyPrefix == self && x.Online }) ||
			!slices.ContainsFunc(a, func(x dcapi.ProviderAgent) bool {
				return x.KeyPrefix == other[:8] && !x.Online && x.ActiveContracts == 7
			}) {
			t.Fatalf("status --json providerAgents: %+v", a)
		}
		i := strings.Index(out, "\nagents of this provider:\n")
		if i < 0 {
			t.Fatalf("no agents listed:\n%s", out)
		}
		lines := strings.Split(strings.TrimSpace(out[i:]), "\n")
		if len(lines) != 3 || lines[1] != "  "+self+" (this agent) online, script, 0 active" ||
			!strings.HasPrefix(lines[2], "  "+other[:8]+" offline, last heartbeat ") || !strings.HasSuffix(lines[2], " ago, proxmox, 7 active") {
			t.Fatalf("agents of this provider:\n%s", strings.Join(lines, "\n"))
		}
	})
}
