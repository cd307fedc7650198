package monitor

import (
	"fmt"
	"strings"
	"time"

	"github.com/decent-stuff/dc-agent/dcapi"
)

// ProviderAgents describes each agent of the provider from agent-status's
// agents list (dc-api's extension; the live API answers one status per
// provider and gives no list: then nil), one text per agent, the agent
// whose key begins with self's prefix marked "(this agent)". The list is
// validated by dcapi (8-hex prefixes); the provisioner type is cleaned
// here. dc-agent status prints one a line; the monitor joins them.
func ProviderAgents(agents []dcapi.ProviderAgent, self string, now time.Time) []string {
	var out []string
	for _, a := range agents {
		t := oneLine(a.KeyPrefix)
		if a.KeyPrefix != "" && strings.HasPrefix(self, a.KeyPrefix) {
			t += " (this agent)"
		}
		if a.Online {
			t += " online"
		} else {
			t += " offline, last heartbeat " + age(now.Sub(time.Unix(0, a.LastHeartbeatNs))) + " ago"
		}
		if a.ProvisionerType != nil && *a.ProvisionerType != "" {
			t += ", " + oneLine(*a.ProvisionerType)
		}
		out = append(out, t+fmt.Sprintf(", %d active", a.ActiveContracts))
	}
	return out
}
