package hetzner

import (
	"strings"

	"github.com/decent-stuff/dc-agent/provisioners/internal/cloudkit"
)

// Naming and labels.
//
// Hetzner limits both what dc-agent would naturally use: a server name must
// be a valid hostname of at most 63 characters, and a label value is at most
// 63 characters, while a contract id is 64 hex characters. So:
//
//   - the server name is "dc-" + the first 60 hex characters of the contract
//     id (63 characters; 240 bits keep it unique in practice, and the labels
//     below are what identify the contract anyway);
//   - the contract id is stored in two labels, dc-agent/contract-1 (hex
//     characters 1-32) and dc-agent/contract-2 (33-64), and found again with
//     the label selector "dc-agent/managed=true,dc-agent/contract-1=..,dc-agent/contract-2=..";
//   - dc-agent/managed=true marks everything the agent created (servers and
//     the SSH key objects it uploaded), and only such objects are ever
//     deleted;
//   - dc-agent/ssh-key=<key id> on a server names the SSH key object it was
//     created with, so the key can be deleted with its last server.
const (
	LabelManaged   = "dc-agent/managed"
	LabelContract1 = "dc-agent/contract-1"
	LabelContract2 = "dc-agent/contract-2"
	LabelSSHKey    = "dc-agent/ssh-key"

	managedSelector = LabelManaged + "=true"
)

// ServerName is the deterministic server name of a contract (see above).
func ServerName(contractID string) string { return cloudkit.HostName(contractID) }

// contractLabels are the labels every server of the contract carries.
func contractLabels(contractID string) map[string]string {
	id := strings.ToLower(contractID)
	return map[string]string{
		LabelManaged:   "true",
		LabelContract1: id[:32],
		LabelContract2: id[32:],
	}
}

// contractSelector selects the servers of one contract.
func contractSelector(contractID string) string {
	l := contractLabels(contractID)
	return managedSelector + "," + LabelContract1 + "=" + l[LabelContract1] + "," + LabelContract2 + "=" + l[LabelContract2]
}

// ContractIDFromLabels rebuilds the contract id from a server's labels; ""
// if the labels are not a managed server's or do not form a valid id
// (labels can be edited by anyone with the token, so they are checked).
func ContractIDFromLabels(labels map[string]string) string {
	if labels[LabelManaged] != "true" {
		return ""
	}
	a, b := labels[LabelContract1], labels[LabelContract2]
	if len(a) != 32 || len(b) != 32 {
		return ""
	}
	id := a + b
	if !cloudkit.IsContractID(id) {
		return ""
	}
	return id
}
