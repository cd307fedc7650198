// Package scripte2e runs the script backend through the real agent loop
// and the real reference API server: what a tenant can read of a failing
// script.
package scripte2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/decent-stuff/dc-agent/apiserver/apitest"
	"github.com/decent-stuff/dc-agent/config"
	"github.com/decent-stuff/dc-agent/dcapi"
	"github.com/decent-stuff/dc-agent/internal/e2e/e2eutil"
	"github.com/decent-stuff/dc-agent/provisioners"
	"github.com/decent-stuff/dc-agent/provisioners/script"
)

// secret is what a provider's `set -x` script prints on stderr (a bearer
// token in the outside review's reproduction).
const secret = "tok-3f9a1c0ffee"

// backend is one script for every action. The offering id picks the
// behaviour: "plain" fails with only stderr, "json" fails with its own
// JSON error, anything else provisions, and its health check then fails
// with only stderr.
const backend = `#!/bin/sh
in=$(cat)
leak() { echo "+ curl -H 'Authorization: Bearer ` + secret + `' https://cloud.internal/v1/servers" >&2; }
case "$in" in
*'"action":"provision"'*'"offering_id":"plain"'*) echo "403 at $0" >&2; leak; exit 1 ;;
*'"action":"provision"'*'"offering_id":"json"'*) leak; echo '{"success":false,"error":"no capacity left in fsn1","retry_possible":false}'; exit 1 ;;
*'"action":"provision"'*) echo '{"success":true,"instance":{"external_id":"vm-1","ip_address":"192.0.2.7","ssh_port":22}}' ;;
*'"action":"health_check"'*) echo "probe failed at $0" >&2; leak; exit 2 ;;
*) echo '{"success":true}' ;;
esac
`

// Finding 3 of issue 15: a failing script's last stderr line (its host
// path, a token `set -x` printed) went out as provisioning_failed.error.
// Only what the script put in its JSON "error" may reach the tenant, in
// the failure report and in health details alike.
func TestScriptStderrNeverReachesTenant(t *testing.T) {
	env := e2eutil.NewEnv(t, apitest.WithRetryCooldown(time.Hour))
	dir := t.TempDir()
	path := filepath.Join(dir, "backend.sh")
	if err := os.WriteFile(path, []byte(backend), 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := env.Config(config.ProvisionerConfig{Type: config.TypeScript, Script: &config.ScriptConfig{
		Provision: path, Terminate: path, HealthCheck: path, TimeoutSeconds: 30,
	}}, "")
	reg := provisioners.NewRegistry()
	script.Register(reg)
	plain := env.API.CreateContract(env.Provider, apitest.ContractSpec{OfferingID: "plain"})
	own := env.API.CreateContract(env.Provider, apitest.ContractSpec{OfferingID: "json"})
	live := env.API.CreateContract(env.Provider, apitest.ContractSpec{OfferingID: "ok"})
	env.StartAgent(cfg, reg)

	leaks := func(s string) bool { return strings.Contains(s, secret) || strings.Contains(s, dir) }
	for cid, want := range map[string]string{
		plain: "the provider's provisioning script failed (exit status 1)",
		own:   "no capacity left in fsn1",
	} {
		c := env.API.WaitForStatus(cid, dcapi.StatusProvisioningFailed, time.Minute)
		got := ""
		if c.LastError != nil {
			got = *c.LastError
		}
		if leaks(got) || got != want {
			t.Errorf("provisioning_failed.error = %q, want %q", got, want)
		}
		if c.InstanceDetails != nil && leaks(*c.InstanceDetails) {
			t.Errorf("failure details leak the script's stderr or path: %s", *c.InstanceDetails)
		}
	}

	env.API.WaitForStatus(live, dcapi.StatusProvisioned, time.Minute)
	var details string
	e2eutil.Eventually(t, time.Minute, "a failed health check stored", func() bool {
		for _, h := range env.API.HealthChecks(live) {
			if h.Status == provisioners.Unknown && h.Details != "" {
				details = h.Details
				return true
			}
		}
		return false
	})
	if leaks(details) || !strings.Contains(details, "the provider's health check script failed (exit status 2)") {
		t.Errorf("health details = %s", details)
	}
}
