package config

import (
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// ProxmoxPlacement is the cluster part of [provisioner.proxmox]: which
// nodes contracts may go to and how full a node may get.
type ProxmoxPlacement struct {
	// Nodes are the nodes placement picks from: a list of names, or
	// "auto" (every node of the cluster). Empty: only Node.
	Nodes ProxmoxNodes `toml:"nodes,omitempty"`
	// NodeTemplates maps a template (a name of [templates], or its VMID)
	// to its copies on other nodes (node name → VMID): how a template on
	// local storage is cloned on another node.
	NodeTemplates map[string]map[string]int `toml:"node_templates,omitempty"`
	// MemoryOvercommit is how much guest memory a node may be given per
	// byte it has (default 1.0); CPUOvercommit how many vCPUs per core
	// (default 4.0).
	MemoryOvercommit float64 `toml:"memory_overcommit,omitempty"`
	CPUOvercommit    float64 `toml:"cpu_overcommit,omitempty"`
	// StorageHeadroomPercent of a storage that placement keeps free
	// (default 10).
	StorageHeadroomPercent int `toml:"storage_headroom_percent,omitempty"`
}

// Placement defaults.
const (
	DefaultMemoryOvercommit       = 1.0
	DefaultCPUOvercommit          = 4.0
	DefaultStorageHeadroomPercent = 10
)

// NodesAuto is the value of nodes that means every node of the cluster.
const NodesAuto = "auto"

// ProxmoxNodes is `nodes = ["pve1", "pve2"]` or `nodes = "auto"` (held as
// the one element "auto").
type ProxmoxNodes []string

// Auto reports whether every node of the cluster may be used.
func (n ProxmoxNodes) Auto() bool { return len(n) == 1 && n[0] == NodesAuto }

// UnmarshalTOML accepts a list of node names or the string "auto".
func (n *ProxmoxNodes) UnmarshalTOML(v any) error {
	switch x := v.(type) {
	case string:
		if x != NodesAuto {
			return fmt.Errorf("nodes = %q: use \"auto\" (every node of the cluster) or a list like [\"pve1\", \"pve2\"]", x)
		}
		*n = ProxmoxNodes{NodesAuto}
		return nil
	case []any:
		var out ProxmoxNodes // nil when empty, as when the key is absent
		for _, e := range x {
			s, ok := e.(string)
			if !ok {
				return fmt.Errorf("nodes: %v is not a node name; use a list of names like [\"pve1\", \"pve2\"]", e)
			}
			out = append(out, s)
		}
		*n = out
		return nil
	}
	return errors.New("nodes must be \"auto\" or a list of node names like [\"pve1\", \"pve2\"]")
}

// MarshalTOML writes "auto" or the list.
func (n ProxmoxNodes) MarshalTOML() ([]byte, error) {
	if n.Auto() {
		return []byte(strconv.Quote(NodesAuto)), nil
	}
	q := make([]string, len(n))
	for i, s := range n {
		if !ValidNodeName(s) { // names are plain ASCII: quoting is TOML's
			return nil, fmt.Errorf("nodes: %q is not a node name", s)
		}
		q[i] = strconv.Quote(s)
	}
	return []byte("[" + strings.Join(q, ", ") + "]"), nil
}

// pveNodeRe is a PVE node name (a host name label).
var pveNodeRe = regexp.MustCompile(`^[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?$`)

// ValidNodeName reports whether s can be a Proxmox node name.
func ValidNodeName(s string) bool { return pveNodeRe.MatchString(s) }

func (pl *ProxmoxPlacement) validate(s string, templates map[string]int) []string {
	var out []string
	add := func(format string, args ...any) { out = append(out, fmt.Sprintf(format, args...)) }
	if !pl.Nodes.Auto() {
		seen := map[string]bool{}
		for _, n := range pl.Nodes {
			switch {
			case n == NodesAuto:
				add("%s.nodes: \"auto\" cannot be mixed with node names; use nodes = \"auto\" alone", s)
			case !ValidNodeName(n):
				add("%s.nodes: %q is not a node name (see `pvesh get /nodes`)", s, n)
			case seen[n]:
				add("%s.nodes lists %q twice; remove one", s, n)
			}
			seen[n] = true
		}
	}
	keys := make([]string, 0, len(pl.NodeTemplates))
	for k := range pl.NodeTemplates {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if _, named := templates[k]; !named {
			if id, err := strconv.Atoi(k); err != nil || id < 100 || id > 999999999 {
				add("%s.node_templates.%s: %q is neither a name of [templates] nor a template VMID", s, k, k)
			}
		}
		nodes := make([]string, 0, len(pl.NodeTemplates[k]))
		for n := range pl.NodeTemplates[k] {
			nodes = append(nodes, n)
		}
		sort.Strings(nodes)
		for _, n := range nodes {
			if !ValidNodeName(n) {
				add("%s.node_templates.%s: %q is not a node name", s, k, n)
			}
			if id := pl.NodeTemplates[k][n]; id < 100 || id > 999999999 {
				add("%s.node_templates.%s.%s = %d is not a VMID; use the VMID of the template's copy on %s", s, k, n, id, n)
			}
		}
	}
	if pl.MemoryOvercommit != 0 && (pl.MemoryOvercommit < 0.1 || pl.MemoryOvercommit > 4) {
		add("%s.memory_overcommit = %g is out of range; use 0.1..4 (default %g: no more guest memory than the node has)", s, pl.MemoryOvercommit, DefaultMemoryOvercommit)
	}
	if pl.CPUOvercommit != 0 && (pl.CPUOvercommit < 0.1 || pl.CPUOvercommit > 64) {
		add("%s.cpu_overcommit = %g is out of range; use 0.1..64 (default %g vCPUs per core)", s, pl.CPUOvercommit, DefaultCPUOvercommit)
	}
	checkRange(add, s+".storage_headroom_percent", pl.StorageHeadroomPercent, 0, 90, DefaultStorageHeadroomPercent)
	return out
}
