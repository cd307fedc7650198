package setup

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// PVEVersion is a parsed `pveversion` line.
type PVEVersion struct {
	Version string // "9.1.1"
	Major   int
	Minor   int
}

var pveVersionRe = regexp.MustCompile(`^pve-manager/((\d+)\.(\d+)(?:[.\-~][0-9A-Za-z.\-~+]*)?)/[0-9a-f]+`)

// ParsePVEVersion parses `pveversion` output
// ("pve-manager/9.1.1/42db4a6c (running kernel: 6.14.8-2-pve)").
func ParsePVEVersion(out string) (PVEVersion, error) {
	line := strings.TrimSpace(out)
	if i := strings.IndexByte(line, '\n'); i >= 0 {
		line = line[:i]
	}
	m := pveVersionRe.FindStringSubmatch(line)
	if m == nil {
		return PVEVersion{}, fmt.Errorf("pveversion printed %q, not pve-manager/<version>/<id>", truncate(line, 120))
	}
	maj, err1 := strconv.Atoi(m[2])
	minor, err2 := strconv.Atoi(m[3])
	if err1 != nil || err2 != nil || maj > 1000 {
		return PVEVersion{}, fmt.Errorf("pveversion printed an unreadable version %q", m[1])
	}
	return PVEVersion{Version: m[1], Major: maj, Minor: minor}, nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// NodeInfo is one entry of `pvesh get /nodes`.
type NodeInfo struct {
	Node           string `json:"node"`
	Status         string `json:"status"`
	SSLFingerprint string `json:"ssl_fingerprint"`
}

// StorageInfo is a storage of the node.
type StorageInfo struct {
	ID      string   `json:"storage"`
	Type    string   `json:"type"`
	Content []string `json:"-"`
	Active  bool     `json:"-"`
	Enabled bool     `json:"-"`
	Shared  bool     `json:"-"`
	Avail   int64    `json:"avail"`
	Total   int64    `json:"total"`
}

// Images reports whether the storage can hold VM disks.
func (s StorageInfo) Images() bool {
	for _, c := range s.Content {
		if c == "images" {
			return true
		}
	}
	return false
}

// BridgeInfo is a Linux bridge of the node.
type BridgeInfo struct {
	Name   string
	CIDR   string
	Active bool
}

// VMInfo is a VM from `pvesh get /cluster/resources --type vm`.
type VMInfo struct {
	VMID     int
	Name     string
	Node     string
	Template bool
	Tags     []string
	Lock     string
	Status   string
}

// HasTag reports whether the VM carries tag t.
func (v VMInfo) HasTag(t string) bool {
	for _, x := range v.Tags {
		if x == t {
			return true
		}
	}
	return false
}

// Discovery is what setup learned about the host before changing it.
type Discovery struct {
	Version  PVEVersion
	Node     string
	Nodes    []NodeInfo
	Storages []StorageInfo // of Node, those that hold VM images
	Bridges  []BridgeInfo
	// TLSFingerprint is the node API certificate's SHA-256 (AA:BB:..).
	TLSFingerprint string
	VMs            []VMInfo // all VMs of the cluster
	// VirtCustomize is true when virt-customize is installed.
	VirtCustomize bool
	// AgentTokens are the API tokens of PVEUser already on the node: the
	// agents set up before (each has its own; a new agent gets another).
	AgentTokens []AgentToken
}

// AgentToken is one API token of PVEUser.
type AgentToken struct {
	Name    string `json:"tokenid"`
	Comment string `json:"comment"`
}

// tokenNameRe is PVE's token name (pve-tokenid's name part).
var tokenNameRe = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9._-]+$`)

// ParseAgentTokens reads PVEUser's tokens from `pvesh get /access/users
// --full 1 --output-format json` (none: the user does not exist yet).
func ParseAgentTokens(out []byte) ([]AgentToken, error) {
	var users []struct {
		UserID string       `json:"userid"`
		Tokens []AgentToken `json:"tokens"`
	}
	if err := json.Unmarshal(out, &users); err != nil {
		return nil, fmt.Errorf("users: not the JSON list pvesh prints: %w", err)
	}
	for _, u := range users {
		if u.UserID == PVEUser {
			for _, t := range u.Tokens {
				if !tokenNameRe.MatchString(t.Name) {
					return nil, fmt.Errorf("users: %q is not a token name", truncate(t.Name, 40))
				}
			}
			sort.Slice(u.Tokens, func(i, j int) bool { return u.Tokens[i].Name < u.Tokens[j].Name })
			return u.Tokens, nil
		}
	}
	return nil, nil
}

// Storage returns the storage named id.
func (d *Discovery) Storage(id string) (StorageInfo, bool) {
	for _, s := range d.Storages {
		if s.ID == id {
			return s, true
		}
	}
	return StorageInfo{}, false
}

// Bridge returns the bridge named name.
func (d *Discovery) Bridge(name string) (BridgeInfo, bool) {
	for _, b := range d.Bridges {
		if b.Name == name {
			return b, true
		}
	}
	return BridgeInfo{}, false
}

// flexInt reads a JSON number, a numeric string or a boolean (PVE mixes them).
type flexInt int64

func (f *flexInt) UnmarshalJSON(b []byte) error {
	s := strings.Trim(string(b), `"`)
	switch s {
	case "", "null", "false":
		*f = 0
		return nil
	case "true":
		*f = 1
		return nil
	}
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		*f = flexInt(n)
		return nil
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return fmt.Errorf("not a number: %s", truncate(string(b), 40))
	}
	*f = flexInt(v)
	return nil
}

// ParseNodes parses `pvesh get /nodes --output-format json`.
func ParseNodes(out []byte) ([]NodeInfo, error) {
	var nodes []NodeInfo
	if err := json.Unmarshal(out, &nodes); err != nil {
		return nil, fmt.Errorf("pvesh get /nodes: not the JSON list it should print: %w", err)
	}
	for _, n := range nodes {
		if n.Node == "" {
			return nil, errors.New("pvesh get /nodes: an entry has no node name")
		}
	}
	return nodes, nil
}

// ParseStorages parses `pvesh get /nodes/N/storage --output-format json`.
func ParseStorages(out []byte) ([]StorageInfo, error) {
	var raw []struct {
		Storage string  `json:"storage"`
		Type    string  `json:"type"`
		Content string  `json:"content"`
		Active  flexInt `json:"active"`
		Enabled flexInt `json:"enabled"`
		Shared  flexInt `json:"shared"`
		Avail   flexInt `json:"avail"`
		Total   flexInt `json:"total"`
	}
	if err := json.Unmarshal(out, &raw); err != nil {
		return nil, fmt.Errorf("storage list: not the JSON list pvesh prints: %w", err)
	}
	var s []StorageInfo
	for _, r := range raw {
		if r.Storage == "" {
			continue
		}
		s = append(s, StorageInfo{ID: r.Storage, Type: r.Type, Content: splitTags(r.Content), Active: r.Active != 0,
			Enabled: r.Enabled != 0 || r.Active != 0, Shared: r.Shared != 0, Avail: int64(r.Avail), Total: int64(r.Total)})
	}
	return s, nil
}

// ParseBridges parses `pvesh get /nodes/N/network --type bridge --output-format json`.
func ParseBridges(out []byte) ([]BridgeInfo, error) {
	var raw []struct {
		Iface  string  `json:"iface"`
		Type   string  `json:"type"`
		CIDR   string  `json:"cidr"`
		Active flexInt `json:"active"`
	}
	if err := json.Unmarshal(out, &raw); err != nil {
		return nil, fmt.Errorf("network list: not the JSON list pvesh prints: %w", err)
	}
	var b []BridgeInfo
	for _, r := range raw {
		if r.Iface == "" || (r.Type != "bridge" && r.Type != "OVSBridge") {
			continue
		}
		b = append(b, BridgeInfo{Name: r.Iface, CIDR: r.CIDR, Active: r.Active != 0})
	}
	return b, nil
}

// ParseVMs parses `pvesh get /cluster/resources --type vm --output-format json`.
func ParseVMs(out []byte) ([]VMInfo, error) {
	var raw []struct {
		VMID     flexInt `json:"vmid"`
		Name     string  `json:"name"`
		Node     string  `json:"node"`
		Type     string  `json:"type"`
		Template flexInt `json:"template"`
		Tags     string  `json:"tags"`
		Lock     string  `json:"lock"`
		Status   string  `json:"status"`
	}
	if err := json.Unmarshal(out, &raw); err != nil {
		return nil, fmt.Errorf("VM list: not the JSON list pvesh prints: %w", err)
	}
	var vms []VMInfo
	for _, r := range raw {
		if r.Type != "" && r.Type != "qemu" {
			continue
		}
		if r.VMID < 100 || r.VMID > 999999999 {
			continue
		}
		vms = append(vms, VMInfo{VMID: int(r.VMID), Name: r.Name, Node: r.Node, Template: r.Template != 0,
			Tags: splitTags(r.Tags), Lock: r.Lock, Status: r.Status})
	}
	sort.Slice(vms, func(i, j int) bool { return vms[i].VMID < vms[j].VMID })
	return vms, nil
}

func splitTags(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool { return r == ';' || r == ',' || r == ' ' })
}

// NotProxmoxError is a host without Proxmox VE.
type NotProxmoxError struct {
	Host   string
	Detail string
}

func (e *NotProxmoxError) Error() string {
	return fmt.Sprintf("%s is not a Proxmox VE host: %s", e.Host, e.Detail)
}

// Discover reads what setup needs from the host: version, node, TLS
// fingerprint, storages, bridges and existing VMs. node picks the node in a
// cluster ("" means: the only node, or the one named like the host).
// Nothing on the host is changed.
func Discover(ctx context.Context, h *Host, r *Reporter, node string) (*Discovery, error) {
	d := &Discovery{}
	out, err := h.Output(ctx, r, "pveversion")
	if err != nil {
		var ee *ExitError
		if errors.As(err, &ee) && ee.NotFound() {
			return nil, WithFix(&NotProxmoxError{Host: h.Addr, Detail: "pveversion is not installed"},
				"run setup against the Proxmox VE node itself (version 8 or 9), not a VM or another server")
		}
		return nil, fmt.Errorf("run pveversion: %w", err)
	}
	if d.Version, err = ParsePVEVersion(out); err != nil {
		return nil, WithFix(&NotProxmoxError{Host: h.Addr, Detail: err.Error()}, "run setup against a Proxmox VE 8 or 9 node")
	}
	switch {
	case d.Version.Major < 8:
		return nil, Fixf("upgrade the node to Proxmox VE 8 or 9 (pve7to8, pve8to9), then re-run",
			"Proxmox VE %s is not supported (end of life)", d.Version.Version)
	case d.Version.Major > 9:
		r.Warn(fmt.Sprintf("Proxmox VE %s is newer than this dc-agent knows (8 and 9); privilege names may have changed", d.Version.Version),
			"update dc-agent if setup or provisioning fails")
	}
	r.Notef("Proxmox VE %s", d.Version.Version)

	res, err := h.Run(ctx, r, Cmd{Args: []string{"pvesh", "get", "/nodes", "--output-format", "json"}, Quiet: true})
	if err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	if d.Nodes, err = ParseNodes(res.Stdout); err != nil {
		return nil, err
	}
	n, err := pickNode(ctx, h, r, d.Nodes, node)
	if err != nil {
		return nil, err
	}
	d.Node = n.Node
	if d.TLSFingerprint = n.SSLFingerprint; d.TLSFingerprint == "" {
		return nil, Fixf("check pveproxy on the node (systemctl status pveproxy)", "node %s reports no ssl_fingerprint", n.Node)
	}
	r.Notef("node %s, API certificate %s", d.Node, d.TLSFingerprint)

	if res, err = h.Run(ctx, r, Cmd{Args: []string{"pvesh", "get", "/nodes/" + d.Node + "/storage", "--output-format", "json"}, Quiet: true}); err != nil {
		return nil, fmt.Errorf("list storages: %w", err)
	}
	all, err := ParseStorages(res.Stdout)
	if err != nil {
		return nil, err
	}
	for _, s := range all {
		if s.Images() && s.Enabled {
			d.Storages = append(d.Storages, s)
		}
	}
	if res, err = h.Run(ctx, r, Cmd{Args: []string{"pvesh", "get", "/nodes/" + d.Node + "/network", "--type", "any_bridge", "--output-format", "json"}, Quiet: true}); err != nil {
		return nil, fmt.Errorf("list bridges: %w", err)
	}
	if d.Bridges, err = ParseBridges(res.Stdout); err != nil {
		return nil, err
	}
	if res, err = h.Run(ctx, r, Cmd{Args: []string{"pvesh", "get", "/cluster/resources", "--type", "vm", "--output-format", "json"}, Quiet: true}); err != nil {
		return nil, fmt.Errorf("list VMs: %w", err)
	}
	if d.VMs, err = ParseVMs(res.Stdout); err != nil {
		return nil, err
	}
	var sn, bn []string
	for _, s := range d.Storages {
		sn = append(sn, s.ID)
	}
	for _, b := range d.Bridges {
		bn = append(bn, b.Name)
	}
	r.Notef("storages for VM disks: %s; bridges: %s; %d VMs", orNone(sn), orNone(bn), len(d.VMs))
	if res, err = h.Run(ctx, r, Cmd{Args: []string{"pvesh", "get", "/access/users", "--full", "1", "--output-format", "json"}, Quiet: true}); err != nil {
		return nil, fmt.Errorf("list users: %w", err)
	}
	if d.AgentTokens, err = ParseAgentTokens(res.Stdout); err != nil {
		return nil, err
	}
	if len(d.AgentTokens) > 0 {
		var names []string
		for _, t := range d.AgentTokens {
			names = append(names, PVEUser+"!"+t.Name)
		}
		r.Notef("agents set up before: %s (each keeps its own token)", strings.Join(names, ", "))
	}
	vc, err := h.Run(ctx, r, Cmd{Args: []string{"sh", "-c", "command -v virt-customize"}, Quiet: true, OK: []int{1, 127}})
	if err != nil {
		return nil, err
	}
	d.VirtCustomize = vc.ExitCode == 0 && len(strings.TrimSpace(string(vc.Stdout))) > 0
	r.Summarize("Proxmox VE %s, node %s; storages %s; bridges %s", d.Version.Version, d.Node, orNone(sn), orNone(bn))
	return d, nil
}

func orNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}

func pickNode(ctx context.Context, h *Host, r *Reporter, nodes []NodeInfo, want string) (NodeInfo, error) {
	var names []string
	for _, n := range nodes {
		names = append(names, n.Node)
		if want != "" && n.Node == want {
			return n, nil
		}
	}
	if want != "" {
		return NodeInfo{}, Fixf("pass one of: --node "+strings.Join(names, ", --node "), "node %q is not in this cluster (%s)", want, strings.Join(names, ", "))
	}
	if len(nodes) == 1 {
		return nodes[0], nil
	}
	if hn, err := h.Output(ctx, r, "hostname"); err == nil {
		for _, n := range nodes {
			if n.Node == hn || strings.HasPrefix(hn, n.Node+".") {
				return n, nil
			}
		}
	}
	if len(nodes) == 0 {
		return NodeInfo{}, errors.New("pvesh get /nodes listed no nodes")
	}
	return NodeInfo{}, Fixf("pass --node with the node this host is: "+strings.Join(names, ", "), "the cluster has %d nodes and this host's name matches none", len(nodes))
}
