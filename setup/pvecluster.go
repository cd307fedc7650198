package setup

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/decent-stuff/dc-agent/config"
)

// Steps for a Proxmox cluster (docs/proxmox-cluster.md). The node plan
// runs them (pveSetup.cluster, and NodeAuditGrant among Layout.Grants) as
// root on the node setup is connected to, through run; each is idempotent:
//
//   - ReadCluster reads the nodes, which storages are shared and the VMs;
//   - NodeAuditGrant (one of Layout.Grants) gives the token Sys.Audit on
//     /nodes, which placement needs to read node load from
//     /cluster/resources;
//   - CopyTemplate copies a template on local storage to every other
//     online node (full clone, offline migration, template), so each node
//     can clone it; the result is the node_templates entry for the config.
//     A template on shared storage needs no copies.

// PVERun runs a command as root on the node and returns its stdout.
type PVERun func(ctx context.Context, args ...string) ([]byte, error)

// ClusterInfo is what `pvesh get /cluster/resources` says about a cluster.
type ClusterInfo struct {
	// Online and Offline are the node names, sorted.
	Online, Offline []string
	// Shared tells which storages are shared (per storage id).
	Shared map[string]bool
	// VMs are the guests of every node.
	VMs []VMInfo
}

// ParseClusterResources parses `pvesh get /cluster/resources
// --output-format json` (every type).
func ParseClusterResources(out []byte) (*ClusterInfo, error) {
	var raw []struct {
		Type    string  `json:"type"`
		Node    string  `json:"node"`
		Status  string  `json:"status"`
		Storage string  `json:"storage"`
		Shared  flexInt `json:"shared"`
	}
	if err := json.Unmarshal(out, &raw); err != nil {
		return nil, fmt.Errorf("cluster resources: not the JSON list pvesh prints: %w", err)
	}
	vms, err := ParseVMs(out)
	if err != nil {
		return nil, err
	}
	c := &ClusterInfo{Shared: map[string]bool{}}
	for _, r := range raw {
		switch r.Type {
		case "node":
			if !config.ValidNodeName(r.Node) {
				return nil, fmt.Errorf("cluster resources: %q is not a node name", r.Node)
			}
			if r.Status == "online" {
				c.Online = append(c.Online, r.Node)
			} else {
				c.Offline = append(c.Offline, r.Node)
			}
		case "storage":
			if r.Storage != "" {
				c.Shared[r.Storage] = r.Shared != 0
			}
		}
	}
	if len(c.Online) == 0 {
		return nil, fmt.Errorf("cluster resources: no node is online")
	}
	sort.Strings(c.Online)
	sort.Strings(c.Offline)
	for _, v := range vms {
		if config.ValidNodeName(v.Node) {
			c.VMs = append(c.VMs, v)
		}
	}
	return c, nil
}

// ReadCluster reads the cluster through the node setup is connected to.
func ReadCluster(ctx context.Context, run PVERun) (*ClusterInfo, error) {
	out, err := run(ctx, "pvesh", "get", "/cluster/resources", "--output-format", "json")
	if err != nil {
		return nil, fmt.Errorf("read the cluster: %w", err)
	}
	return ParseClusterResources(out)
}

// NodeAuditGrant is what cluster placement needs beyond Layout.Grants:
// node sizes and load in /cluster/resources show only with Sys.Audit on
// /nodes/{node} (PVE::API2Tools::extract_node_stats). The built-in
// PVEAuditor role grants nothing else on node paths.
var NodeAuditGrant = Grant{Path: "/nodes", Role: "PVEAuditor", Need: []string{"Sys.Audit"}}

// CopyTemplate makes sure every online node has a copy of template tpl
// (a template on local storage): a node that has a template of the same
// name and tags keeps it; a copy an interrupted run left unfinished is
// removed; the others get one, with the lowest free VMID from vmidBase.
// It returns node → VMID of the copies (for node_templates). Offline
// nodes are skipped (run it again once they are back).
func CopyTemplate(ctx context.Context, run PVERun, c *ClusterInfo, tpl, vmidBase int) (map[string]int, error) {
	var src VMInfo
	for _, v := range c.VMs {
		if v.VMID == tpl {
			src = v
		}
	}
	if src.VMID == 0 || !src.Template {
		return nil, Fixf("build the template first (dc-agent setup proxmox)", "VM %d is not a template of the cluster", tpl)
	}
	if !slices.Contains(c.Online, src.Node) {
		return nil, Fixf("bring node "+src.Node+" back online and re-run", "template %d is on node %s, which is offline", tpl, src.Node)
	}
	copies := map[string]int{}
	taken := map[int]bool{}
	for _, v := range c.VMs {
		taken[v.VMID] = true
	}
	for _, v := range c.VMs {
		if v.VMID == tpl || v.Name != src.Name || !sameTags(v.Tags, src.Tags) {
			continue
		}
		if v.Template && !v.HasTag(TagBuilding) {
			copies[v.Node] = v.VMID
			continue
		}
		// A copy an interrupted run left: remove it on its node.
		if !slices.Contains(c.Online, v.Node) {
			continue
		}
		if _, err := run(ctx, "pvesh", "delete", fmt.Sprintf("/nodes/%s/qemu/%d", v.Node, v.VMID), "--purge", "1",
			"--destroy-unreferenced-disks", "1", "--skiplock", "1"); err != nil {
			return nil, WithFix(fmt.Errorf("remove the unfinished copy %d on %s: %w", v.VMID, v.Node, err),
				fmt.Sprintf("remove it on %s: qm destroy %d --purge 1 --skiplock 1", v.Node, v.VMID))
		}
	}
	tags := strings.Join(src.Tags, ";")
	building := strings.Join(append(slices.Clone(src.Tags), TagBuilding), ";")
	for _, node := range c.Online {
		if node == src.Node {
			continue
		}
		if _, ok := copies[node]; ok {
			continue
		}
		id := vmidBase
		for taken[id] {
			id++
		}
		taken[id] = true
		for _, cmd := range copyCommands(src, node, id, tags, building) {
			if _, err := run(ctx, cmd...); err != nil {
				return nil, WithFix(fmt.Errorf("copy template %d to node %s as %d: %w", tpl, node, id, err),
					"re-run setup: it removes the unfinished copy and starts again")
			}
		}
		copies[node] = id
	}
	return copies, nil
}

// copyCommands copy template src to node as VM id: a full clone on src's
// node (marked as building), an offline migration that copies its disks
// to the same storage of node, the conversion to a template there and the
// final tags. pvesh forwards the last two to node.
func copyCommands(src VMInfo, node string, id int, tags, building string) [][]string {
	ids := strconv.Itoa(id)
	return [][]string{
		{"qm", "clone", strconv.Itoa(src.VMID), ids, "--full", "1", "--name", src.Name},
		{"qm", "set", ids, "--tags", building},
		{"qm", "migrate", ids, node},
		{"pvesh", "create", fmt.Sprintf("/nodes/%s/qemu/%d/template", node, id)},
		{"pvesh", "set", fmt.Sprintf("/nodes/%s/qemu/%d/config", node, id), "--tags", tags},
	}
}

// sameTags compares tag sets, ignoring TagBuilding.
func sameTags(a, b []string) bool {
	norm := func(t []string) []string {
		out := slices.DeleteFunc(slices.Clone(t), func(s string) bool { return s == TagBuilding })
		sort.Strings(out)
		return out
	}
	return slices.Equal(norm(a), norm(b))
}
