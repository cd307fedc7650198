package vultr

import (
	"github.com/decent-stuff/dc-agent/provisioners/internal/cloudkit"
)

// Names and tags.
//
// Vultr instances have free-text tags and a label, neither unique, and SSH
// key objects have only a name. So, as on DigitalOcean, an instance is found
// by its tags (cloudkit.TagManaged, cloudkit.TagContractPrefix + contract
// id, cloudkit.TagKeyPrefix + SSH key id); label and hostname are "dc-" +
// the first 60 hex characters of the contract id.

// InstanceLabel is the deterministic label (and hostname) of a contract's instance.
func InstanceLabel(contractID string) string { return cloudkit.HostName(contractID) }
