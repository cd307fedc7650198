package setup

import (
	"fmt"
	"slices"
	"sort"
)

// The least-privilege identity setup creates on the Proxmox node.
const (
	PVEUser      = "dc-agent@pve"
	PVERole      = "DCAgent"
	PVETokenName = "agent"
	PVEPool      = "dc-agent"
	// PVETokenID is the token's full id, as the API header names it.
	PVETokenID = PVEUser + "!" + PVETokenName
)

// AgentAuditPriv is the privilege guest-agent reads need: PVE 9 dropped
// VM.Monitor for VM.GuestAgent.Audit, and `pveum role add` refuses the
// name the running version does not know (BACKENDS.md §4.3).
func AgentAuditPriv(major int) string {
	if major >= 9 {
		return "VM.GuestAgent.Audit"
	}
	return "VM.Monitor"
}

// AgentTenantPriv is what tenant password resets and SSH key rotations
// through the guest agent need beyond the agent reads: nothing on PVE 8
// (VM.Monitor covers every agent command), VM.GuestAgent.Unrestricted on
// PVE 9, where set-user-password and exec demand it (qemu-server 9.x,
// PVE/API2/Qemu/Agent.pm; it also allows file-read and file-write).
func AgentTenantPriv(major int) string {
	if major >= 9 {
		return "VM.GuestAgent.Unrestricted"
	}
	return ""
}

// AgentPrivileges is the privilege list of the role DCAgent for PVE major
// version major: exactly what the Proxmox provisioner does to the VMs it
// creates (allocate by cloning into the pool, configure, resize, power,
// read the guest agent, set a tenant's password or key through it,
// destroy), sorted. Templates, storage and bridge
// get PVE's built-in read/use roles instead (see Layout.Grants), so the
// token can neither change nor delete a template.
func AgentPrivileges(major int) []string {
	p := []string{"VM.Allocate", "VM.Audit", "VM.Config.CPU", "VM.Config.Cloudinit", "VM.Config.Disk",
		"VM.Config.Memory", "VM.Config.Network", "VM.Config.Options", "VM.PowerMgmt", AgentAuditPriv(major)}
	if t := AgentTenantPriv(major); t != "" {
		p = append(p, t)
	}
	sort.Strings(p)
	return slices.Compact(p)
}

// Built-in PVE roles granted on the paths the agent only reads or uses.
const (
	RoleTemplateUser  = "PVETemplateUser"  // VM.Audit, VM.Clone
	RoleDatastoreUser = "PVEDatastoreUser" // Datastore.AllocateSpace, Datastore.Audit
	RoleSDNUser       = "PVESDNUser"       // SDN.Audit, SDN.Use
)

// Grant is an ACL path, the role granted there and the privileges the
// agent needs there.
type Grant struct {
	Path string
	Role string
	Need []string
}

// Layout is where the provisioner works on a node.
type Layout struct {
	Pool      string
	Storage   string
	Bridge    string
	Templates []int
}

// Grants lists the ACL paths the token is granted the role on, with what
// each must effectively allow: the pool holds the VMs it clones (clone
// checks VM.Allocate on the pool; members inherit the pool's rights), each
// template is cloned from (its copies on other nodes of a cluster too),
// the storage holds the disks (an ACL on /storage/ID holds on every node,
// a shared storage's one grant covers it cluster-wide), the bridge carries
// the network (SDN.Use on the local zone's vnet), and /nodes shows node
// size and load (NodeAuditGrant: placement and the inventory read them).
func (l Layout) Grants(major int) []Grant {
	var g []Grant
	if l.Pool != "" {
		g = append(g, Grant{Path: "/pool/" + l.Pool, Role: PVERole, Need: AgentPrivileges(major)})
	} else {
		g = append(g, Grant{Path: "/vms", Role: PVERole, Need: AgentPrivileges(major)})
	}
	ids := slices.Clone(l.Templates)
	sort.Ints(ids)
	for _, id := range slices.Compact(ids) {
		g = append(g, Grant{Path: fmt.Sprintf("/vms/%d", id), Role: RoleTemplateUser, Need: []string{"VM.Audit", "VM.Clone"}})
	}
	if l.Storage != "" {
		g = append(g, Grant{Path: "/storage/" + l.Storage, Role: RoleDatastoreUser, Need: []string{"Datastore.AllocateSpace", "Datastore.Audit"}})
	}
	if l.Bridge != "" {
		g = append(g, Grant{Path: "/sdn/zones/localnetwork/" + l.Bridge, Role: RoleSDNUser, Need: []string{"SDN.Use"}})
	}
	return append(g, NodeAuditGrant)
}

// Missing returns the privileges of need that have lacks.
func Missing(need []string, have map[string]bool) []string {
	var out []string
	for _, p := range need {
		if !have[p] {
			out = append(out, p)
		}
	}
	return out
}
