package digitalocean

import (
	"strconv"
	"strings"

	"github.com/decent-stuff/dc-agent/provisioners/internal/cloudkit"
)

// Names and tags.
//
// DigitalOcean droplets have no labels, only tags (names of letters,
// digits, colons, dashes and underscores, up to 255 characters), and
// droplet names need not be unique. So a contract's droplet is found by a
// tag, the same ones the earlier Rust agent set (dc-agent/src/provisioner/
// digitalocean.rs), so droplets it made are managed here too:
//
//   - "dc-agent" on every droplet the agent created; only such droplets are
//     ever deleted, and reconcile lists this tag;
//   - "dc-contract-<64 hex>" names the contract;
//   - "dc-sshkey-<key id>" names the SSH key object the droplet was created
//     with, so the key can be deleted with its last droplet (SSH key objects
//     have no tags: the agent's own are the ones named "dc-key-...").
//
// The droplet name is "dc-" + the first 60 hex characters of the contract
// id, a valid hostname (the earlier agent's 67-character names are found by
// their tag all the same).
const (
	TagManaged        = "dc-agent"
	TagContractPrefix = "dc-contract-"
	TagKeyPrefix      = "dc-sshkey-"
)

// DropletName is the deterministic droplet name of a contract.
func DropletName(contractID string) string { return cloudkit.HostName(contractID) }

func contractTag(cid string) string { return TagContractPrefix + strings.ToLower(cid) }

func keyTag(id int) string { return TagKeyPrefix + strconv.Itoa(id) }

// ContractIDFromTags returns the contract a managed droplet belongs to; ""
// if the tags are not a managed droplet's or name no single valid contract
// (tags can be changed by anyone with the token, so they are checked).
func ContractIDFromTags(tags []string) string {
	managed := false
	id := ""
	for _, t := range tags {
		if t == TagManaged {
			managed = true
		}
		if c, ok := strings.CutPrefix(t, TagContractPrefix); ok {
			if !cloudkit.IsContractID(c) || (id != "" && id != c) {
				return ""
			}
			id = c
		}
	}
	if !managed {
		return ""
	}
	return id
}

// keyIDFromTags returns the SSH key object id a droplet was created with (0: none).
func keyIDFromTags(tags []string) int {
	for _, t := range tags {
		if s, ok := strings.CutPrefix(t, TagKeyPrefix); ok {
			if n, err := strconv.Atoi(s); err == nil && n > 0 {
				return n
			}
		}
	}
	return 0
}

func hasTag(tags []string, tag string) bool {
	for _, t := range tags {
		if t == tag {
			return true
		}
	}
	return false
}
