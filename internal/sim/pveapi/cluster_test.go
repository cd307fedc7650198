package pveapi

import (
	"context"
	"crypto/tls"
	"io"
	"net/http"
	"strings"
	"testing"

	proxmox "github.com/luthermonson/go-proxmox"

	"github.com/decent-stuff/dc-agent/internal/sim/pve"
)

// rawDo sends one request with the token and returns the status line and
// body.
func rawDo(t *testing.T, s *TestSim, method, path string) (string, string, error) {
	t.Helper()
	req, err := http.NewRequest(method, s.APIURL()+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "PVEAPIToken="+s.TokenID+"="+s.Secret)
	tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}} //nolint:gosec // test
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return "", "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.Status, string(b), nil
}

// The API runs on pve1 of a 3-node cluster: requests for an offline node
// get pveproxy's 595 with no body, changes without quorum PVE's 500, and
// pve1 itself offline answers nothing.
func TestClusterOverHTTP(t *testing.T) {
	s := StartTest(t, TestOptions{Nodes: 3, NodeTemplates: true})
	s.Update(t, func(st *pve.State) error { return st.SetNodeOffline("pve2", false) })
	if status, body, err := rawDo(t, s, "GET", "/nodes/pve2/qemu"); err != nil || status != "595 No route to host" || body != "" {
		t.Errorf("offline node: %q %q %v", status, body, err)
	}
	if status, _, err := rawDo(t, s, "GET", "/nodes/pve3/qemu"); err != nil || status != "200 OK" {
		t.Errorf("online node: %q %v", status, err)
	}
	c := client(t, s, s.TokenID, s.Secret)
	rs, err := (&proxmox.Cluster{}).New(c).Resources(context.Background())
	if err != nil || len(rs) == 0 {
		t.Fatalf("go-proxmox reads the resources: %v", err)
	}
	states := map[string]string{}
	for _, r := range rs {
		if r.Type == "node" {
			states[r.Node] = r.Status
		}
	}
	if states["pve1"] != "online" || states["pve2"] != "offline" || states["pve3"] != "online" {
		t.Errorf("node states: %v", states)
	}
	s.Update(t, func(st *pve.State) error { return st.SetNodeOffline("pve3", true) })
	if status, _, err := rawDo(t, s, "POST", "/nodes/pve1/qemu/9000/status/start"); err != nil || status != "500 cluster not ready - no quorum?" {
		t.Errorf("without quorum: %q %v", status, err)
	}
	if status, _, err := rawDo(t, s, "GET", "/cluster/nextid"); err != nil || status != "200 OK" {
		t.Errorf("reads work without quorum: %q %v", status, err)
	}
	s.Update(t, func(st *pve.State) error { return st.SetNodeOffline("pve1", true) })
	if _, _, err := rawDo(t, s, "GET", "/version"); err == nil || !strings.Contains(err.Error(), "EOF") {
		t.Errorf("the API node itself offline: %v", err)
	}
}
