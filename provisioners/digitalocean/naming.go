package digitalocean

import (
	"strconv"

	"github.com/decent-stuff/dc-agent/provisioners/internal/cloudkit"
)

// Names and tags.
//
// Droplets have no labels, only tags, and droplet names need not be unique.
// A contract's droplet is found by its tags (cloudkit.TagManaged,
// TagContractPrefix + contract id, TagKeyPrefix + SSH key id), the first
// two as the earlier Rust agent set them, so droplets it made are managed
// here too. The droplet name is "dc-" + the first 60 hex characters of the
// contract id, a valid hostname (the earlier agent's 67-character names are
// found by their tag all the same).
const (
	TagManaged        = cloudkit.TagManaged
	TagContractPrefix = cloudkit.TagContractPrefix
	TagKeyPrefix      = cloudkit.TagKeyPrefix
)

// DropletName is the deterministic droplet name of a contract.
func DropletName(contractID string) string { return cloudkit.HostName(contractID) }

// ContractIDFromTags returns the contract a managed droplet belongs to ("" if none).
func ContractIDFromTags(tags []string) string { return cloudkit.ContractIDFromTags(tags) }

func contractTag(cid string) string { return cloudkit.ContractTag(cid) }

func keyTag(id int) string { return cloudkit.KeyTag(strconv.Itoa(id)) }

// keyIDFromTags returns the SSH key object id a droplet was created with (0: none).
func keyIDFromTags(tags []string) int {
	n, err := strconv.Atoi(cloudkit.KeyIDFromTags(tags))
	if err != nil || n <= 0 {
		return 0
	}
	return n
}

func hasTag(tags []string, tag string) bool { return cloudkit.HasTag(tags, tag) }
