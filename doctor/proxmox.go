package doctor

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/luthermonson/go-proxmox"

	"github.com/decent-stuff/dc-agent/config"
	"github.com/decent-stuff/dc-agent/setup"
)

// PinError is a TLS certificate that is not the pinned one.
type PinError struct {
	Pinned, Got string
}

func (e *PinError) Error() string {
	return fmt.Sprintf("the node's TLS certificate has SHA-256 fingerprint %s, but tls_fingerprint pins %s", colons(e.Got), colons(e.Pinned))
}

func colons(hexfp string) string {
	var parts []string
	for i := 0; i+2 <= len(hexfp); i += 2 {
		parts = append(parts, strings.ToUpper(hexfp[i:i+2]))
	}
	return strings.Join(parts, ":")
}

// pinnedHTTPClient trusts exactly the certificate whose SHA-256 is pin
// (lowercase hex), or anything when insecure.
func pinnedHTTPClient(pin string, insecure bool, timeout time.Duration) *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{
		// Verification is the pin below, not the CA chain: PVE nodes use
		// self-signed certificates.
		InsecureSkipVerify: true, //nolint:gosec // pinned in VerifyPeerCertificate
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			if insecure {
				return nil
			}
			if len(raw) == 0 {
				return errors.New("no certificate")
			}
			sum := sha256.Sum256(raw[0])
			if got := hex.EncodeToString(sum[:]); got != pin {
				return &PinError{Pinned: pin, Got: got}
			}
			return nil
		},
	}
	return &http.Client{Transport: tr, Timeout: timeout}
}

// CheckProxmox checks a Proxmox provisioner through the node's API with
// the configured token: reachable with the pinned certificate, the token
// accepted, its effective privileges on every path the agent uses, the
// templates and the storage present.
func CheckProxmox(ctx context.Context, cfg *config.Config, px *config.ProxmoxConfig) []Finding {
	const check = "proxmox"
	rerun := "re-run: dc-agent setup proxmox --host " + hostOf(px.APIURL)
	secret, err := cfg.ReadSecret(px.APITokenSecretFile, px.APITokenSecret, "the Proxmox token secret")
	if err != nil {
		return []Finding{{Check: check, Status: Fail, Message: err.Error(), Fix: "restore the token secret file or " + rerun + " (it creates a new token)"}}
	}
	pin := ""
	if px.TLSFingerprint != "" {
		pin, _ = config.NormalizeFingerprint(px.TLSFingerprint)
	}
	var out []Finding
	if px.InsecureSkipVerify {
		out = append(out, Finding{Check: check, Status: Warn, Message: "insecure_skip_verify is on: the node's certificate is not checked", Fix: "set tls_fingerprint (pvesh get /nodes --output-format json shows ssl_fingerprint) and remove insecure_skip_verify"})
	}
	base := strings.TrimSuffix(px.APIURL, "/")
	if !strings.HasSuffix(base, "/api2/json") {
		base += "/api2/json"
	}
	c := proxmox.NewClient(base, proxmox.WithHTTPClient(pinnedHTTPClient(pin, px.InsecureSkipVerify, 15*time.Second)),
		proxmox.WithAPIToken(px.APITokenID, secret), proxmox.WithUserAgent("dc-agent-doctor"))

	ver, err := c.Version(ctx)
	if err != nil {
		var pe *PinError
		switch {
		case errors.As(err, &pe):
			return append(out, Finding{Check: check, Status: Fail, Message: fmt.Sprintf("%s: %v", px.APIURL, pe),
				Fix: "if the node's certificate was renewed (check: pvenode cert info on the node), " + rerun + " to pin the new one; otherwise someone may be intercepting the connection"})
		case proxmox.IsNotAuthorized(err):
			return append(out, Finding{Check: check, Status: Fail, Message: fmt.Sprintf("%s refused token %s: revoked, expired or a wrong secret", px.APIURL, px.APITokenID),
				Fix: rerun + " (it creates a new token and updates the secret file)"})
		default:
			return append(out, Finding{Check: check, Status: Fail, Message: fmt.Sprintf("%s is not reachable: %v", px.APIURL, err),
				Fix: "check that the node is up and port 8006 is reachable from here, and provisioner.proxmox.api_url"})
		}
	}
	major, _ := strconv.Atoi(strings.SplitN(ver.Version, ".", 2)[0])
	out = append(out, Finding{Check: check, Status: OK, Message: fmt.Sprintf("%s answers with the pinned certificate (Proxmox VE %s); token %s accepted", px.APIURL, ver.Version, px.APITokenID)})

	// Effective privileges, path by path.
	tpls := templateIDs(px)
	lay := setup.Layout{Pool: px.Pool, Storage: px.Storage, Bridge: px.Bridge, Templates: append(slices.Clone(tpls), copyIDs(px)...)}
	var lacking []string
	for _, g := range lay.Grants(major) {
		perms, err := c.Permissions(ctx, &proxmox.PermissionsOptions{Path: g.Path})
		if err != nil {
			out = append(out, Finding{Check: check, Status: Fail, Message: fmt.Sprintf("reading the token's permissions on %s: %v", g.Path, err), Fix: rerun})
			continue
		}
		// A listed privilege is granted; its value only says whether the
		// grant propagates.
		have := map[string]bool{}
		for p := range perms[g.Path] {
			have[p] = true
		}
		if m := setup.Missing(g.Need, have); len(m) > 0 {
			lacking = append(lacking, fmt.Sprintf("%s on %s", strings.Join(m, ","), g.Path))
		}
	}
	if len(lacking) > 0 {
		out = append(out, Finding{Check: check, Status: Fail, Message: "token " + px.APITokenID + " lacks " + strings.Join(lacking, "; "),
			Fix: rerun + " (it grants the role " + setup.PVERole + " on each path)"})
	} else {
		out = append(out, Finding{Check: check, Status: OK, Message: "the token holds every privilege the provisioner needs"})
	}

	out = append(out, nodeLoad(ctx, c, px, rerun))

	node, err := c.Node(ctx, px.Node)
	if err != nil {
		return append(out, Finding{Check: check, Status: Fail, Message: fmt.Sprintf("node %s: %v", px.Node, err), Fix: "set provisioner.proxmox.node to a node of `pvesh get /nodes`"})
	}
	names := templateNames(px)
	for _, id := range tpls {
		vm, err := node.VirtualMachine(ctx, id)
		switch {
		case err != nil && strings.Contains(err.Error(), "does not exist"):
			out = append(out, Finding{Check: check, Status: Fail, Message: fmt.Sprintf("template %d (%s) is missing on node %s", id, names[id], px.Node),
				Fix: rerun + " --templates " + orDefault(names[id], "ubuntu-24.04") + " (it builds it again)"})
		case err != nil:
			out = append(out, Finding{Check: check, Status: Fail, Message: fmt.Sprintf("template %d: %v", id, err), Fix: rerun})
		case !bool(vm.Template):
			out = append(out, Finding{Check: check, Status: Fail, Message: fmt.Sprintf("VM %d (%s) is not a template", id, vm.Name),
				Fix: rerun + " (it rebuilds templates), or point provisioner.proxmox.templates at a template"})
		default:
			out = append(out, Finding{Check: check, Status: OK, Message: fmt.Sprintf("template %d %s present", id, vm.Name)})
		}
	}
	st, err := node.Storage(ctx, px.Storage)
	switch {
	case err != nil:
		out = append(out, Finding{Check: check, Status: Fail, Message: fmt.Sprintf("storage %s on node %s: %v", px.Storage, px.Node, err), Fix: "set provisioner.proxmox.storage to a storage of `pvesm status`, or " + rerun})
	case st.Enabled == 0 || st.Active == 0:
		out = append(out, Finding{Check: check, Status: Fail, Message: fmt.Sprintf("storage %s is not active", px.Storage), Fix: "check it on the node with: pvesm status"})
	default:
		free := float64(st.Avail) / (1 << 30)
		f := Finding{Check: check, Status: OK, Message: fmt.Sprintf("storage %s present, %.0f GiB free", px.Storage, free)}
		if free < 20 {
			f.Status, f.Fix = Warn, "free space on "+px.Storage+" or choose another storage"
		}
		out = append(out, f)
	}
	return out
}

// nodeLoad checks that the token sees the size and load of the nodes
// contracts go to: /cluster/resources leaves maxmem out of a node entry
// without Sys.Audit on /nodes/{node} (PVE::API2Tools::extract_node_stats),
// and placement and the heartbeat's inventory read them there.
func nodeLoad(ctx context.Context, c *proxmox.Client, px *config.ProxmoxConfig, rerun string) Finding {
	const check = "proxmox"
	var nodes []struct {
		Node   string `json:"node"`
		Status string `json:"status"`
		MaxMem int64  `json:"maxmem"`
	}
	if err := c.Get(ctx, "/cluster/resources?type=node", &nodes); err != nil {
		return Finding{Check: check, Status: Fail, Message: "reading node load from /cluster/resources: " + err.Error(), Fix: rerun}
	}
	want := map[string]bool{px.Node: true}
	for _, n := range px.Nodes {
		if n != config.NodesAuto {
			want[n] = true
		}
	}
	var seen, hidden []string
	for _, n := range nodes {
		if n.Status != "online" || !want[n.Node] && !px.Nodes.Auto() {
			continue
		}
		seen = append(seen, n.Node)
		if n.MaxMem == 0 {
			hidden = append(hidden, n.Node)
		}
	}
	sort.Strings(seen)
	sort.Strings(hidden)
	user, _, _ := strings.Cut(px.APITokenID, "!")
	switch {
	case len(hidden) > 0:
		return Finding{Check: check, Status: Fail, Message: fmt.Sprintf("token %s cannot read the load of node %s (placement and the inventory need it)", px.APITokenID, strings.Join(hidden, ", ")),
			Fix: rerun + ", or on a node: pveum acl modify /nodes --roles PVEAuditor --users " + user + " --tokens '" + px.APITokenID + "'"}
	case len(seen) == 0:
		return Finding{Check: check, Status: Warn, Message: "no node contracts go to is online", Fix: "check the cluster with: pvecm status"}
	}
	return Finding{Check: check, Status: OK, Message: "the token reads the load of node " + strings.Join(seen, ", ")}
}

// copyIDs are the VMIDs of the templates' copies on other nodes
// (node_templates).
func copyIDs(px *config.ProxmoxConfig) []int {
	var ids []int
	for _, copies := range px.NodeTemplates {
		for _, id := range copies {
			ids = append(ids, id)
		}
	}
	return ids
}

func templateIDs(px *config.ProxmoxConfig) []int {
	seen := map[int]bool{}
	var ids []int
	if px.TemplateVMID > 0 {
		seen[px.TemplateVMID] = true
		ids = append(ids, px.TemplateVMID)
	}
	for _, id := range px.Templates {
		if !seen[id] {
			seen[id] = true
			ids = append(ids, id)
		}
	}
	sort.Ints(ids)
	return ids
}

func templateNames(px *config.ProxmoxConfig) map[int]string {
	m := map[int]string{}
	for n, id := range px.Templates {
		m[id] = n
	}
	return m
}

func hostOf(apiURL string) string {
	s := strings.TrimPrefix(strings.TrimPrefix(apiURL, "https://"), "http://")
	if i := strings.IndexAny(s, "/"); i >= 0 {
		s = s[:i]
	}
	if h, _, ok := strings.Cut(s, ":"); ok && !strings.Contains(h, "[") {
		return h
	}
	return s
}
