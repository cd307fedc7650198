package testutil_test

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/decent-stuff/dc-agent/config"
	"github.com/decent-stuff/dc-agent/internal/testutil"
)

// The config AgentTOML writes is the one dc-agent loads: every key lands
// in its section, the extra lines too.
func TestAgentTOMLLoads(t *testing.T) {
	dir := t.TempDir()
	script := filepath.Join(dir, "backend.sh")
	pub := strings.Repeat("ab", 32)
	path := testutil.AgentTOML{Endpoint: "https://api.example.org", ProviderPubkey: pub, AgentKey: filepath.Join(dir, "agent.key"),
		API: `pool_id = "pool-1"`, Polling: "interval_seconds = 7\nhealth_check_interval_seconds = 11",
		StateDir: filepath.Join(dir, "state"), StatusSocket: filepath.Join(dir, "s.sock"), Agent: "max_concurrent_provisions = 3",
		Rest: testutil.ScriptProvisionerTOML(script, []string{"provision", "terminate", "health_check", "list"}, "timeout_seconds = 42"),
	}.Write(t, filepath.Join(dir, "dc-agent.toml"))
	c, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	s := c.Provisioner.Script
	if c.API.Endpoint != "https://api.example.org" || c.API.ProviderPubkey != pub || c.API.AgentSecretKey != filepath.Join(dir, "agent.key") ||
		c.API.PoolID != "pool-1" || c.Polling.IntervalSeconds != 7 || c.Polling.HealthCheckIntervalSeconds != 11 ||
		c.Agent.StateDir != filepath.Join(dir, "state") || c.Agent.StatusSocket != filepath.Join(dir, "s.sock") || c.Agent.MaxConcurrentProvisions != 3 ||
		c.Provisioner.Type != config.TypeScript || s == nil || s.Provision != script || s.Terminate != script || s.HealthCheck != script ||
		s.List != script || s.GetInstance != "" || s.TimeoutSeconds != 42 {
		t.Fatalf("loaded %+v\nscript %+v", c, s)
	}
}
