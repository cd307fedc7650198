package cloudkit

import "strings"

// Tags of the agent's instances on clouds that have tags but no labels
// (DigitalOcean, Vultr). The first two are the ones the earlier Rust agent
// set on its droplets (dc-agent/src/provisioner/digitalocean.rs), so its
// droplets are found and managed too:
//
//   - "dc-agent" marks every instance the agent created; only such
//     instances are ever deleted or powered off, and reconcile lists it;
//   - "dc-contract-<64 hex>" names the contract;
//   - "dc-sshkey-<key id>" names the SSH key object the instance was
//     created with, so the key goes with its last instance (key objects
//     have no tags there: the agent's own are those named dc-key-...).
const (
	TagManaged        = "dc-agent"
	TagContractPrefix = "dc-contract-"
	TagKeyPrefix      = "dc-sshkey-"
)

// ContractTag is the tag naming a contract.
func ContractTag(cid string) string { return TagContractPrefix + strings.ToLower(cid) }

// KeyTag is the tag naming an SSH key object.
func KeyTag(id string) string { return TagKeyPrefix + id }

// ContractIDFromTags returns the contract a managed instance belongs to; ""
// if the tags are not a managed instance's or name no single valid contract
// (tags can be changed by anyone with the token, so they are checked).
func ContractIDFromTags(tags []string) string {
	managed := false
	id := ""
	for _, t := range tags {
		if t == TagManaged {
			managed = true
		}
		if c, ok := strings.CutPrefix(t, TagContractPrefix); ok {
			if !IsContractID(c) || (id != "" && id != c) {
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

// KeyIDFromTags returns the SSH key object id an instance was created with
// ("": none).
func KeyIDFromTags(tags []string) string {
	for _, t := range tags {
		if s, ok := strings.CutPrefix(t, TagKeyPrefix); ok && s != "" {
			return s
		}
	}
	return ""
}

// HasTag reports whether tags holds tag.
func HasTag(tags []string, tag string) bool {
	for _, t := range tags {
		if t == tag {
			return true
		}
	}
	return false
}
