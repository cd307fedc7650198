package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// serve runs pve-sim with args on a free port and returns its JSON line
// decoded, the line, a cancel that stops it and its result.
func serve(t *testing.T, args ...string) (map[string]string, string, context.CancelFunc, chan error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, append([]string{"--listen", "127.0.0.1:0", "--timing", "fast"}, args...), pw)
		pw.Close()
	}()
	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		cancel()
		t.Fatalf("no line: %v (%v)", err, <-done)
	}
	var info map[string]string
	if err := json.Unmarshal([]byte(line), &info); err != nil {
		cancel()
		t.Fatal(err)
	}
	return info, line, cancel, done
}

func TestPrintsConnectionLineAndServes(t *testing.T) {
	info, line, cancel, done := serve(t, "--state", t.TempDir(), "--node", "pve7", "--pve-version", "8.4")
	for _, k := range []string{"url", "token_id", "token_secret", "fingerprint", "node"} {
		if info[k] == "" {
			t.Errorf("%s missing in %s", k, line)
		}
	}
	if info["node"] != "pve7" || !strings.HasPrefix(info["url"], "https://127.0.0.1:") {
		t.Errorf("line: %s", line)
	}
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} //nolint:gosec // test
	req, _ := http.NewRequest("GET", info["url"]+"/api2/json/version", nil)
	req.Header.Set("Authorization", "PVEAPIToken="+info["token_id"]+"="+info["token_secret"])
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), `"release":"8.4"`) {
		t.Errorf("version: %s", body)
	}
	// A new state starts with the cloud-init template 9000 on local-lvm,
	// networked on vmbr0, which the printed token may clone.
	req, _ = http.NewRequest("GET", info["url"]+"/api2/json/nodes/pve7/qemu/9000/config", nil)
	req.Header.Set("Authorization", "PVEAPIToken="+info["token_id"]+"="+info["token_secret"])
	resp, err = hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`"template":1`, `local-lvm:base-9000-disk-0`, `bridge=vmbr0`, `cloudinit`} {
		if !strings.Contains(string(body), want) {
			t.Errorf("template 9000 config lacks %s: %s", want, body)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := run(context.Background(), []string{"--pve-version", "7.4"}, io.Discard); err == nil {
		t.Error("PVE 7 must be refused")
	}
}

// --nodes 3 serves a cluster; the node command takes a node offline and
// brings it back in the running simulator's state.
func TestClusterAndNodeCommand(t *testing.T) {
	dir := t.TempDir()
	info, line, cancel, done := serve(t, "--state", dir, "--nodes", "3")
	ctx := context.Background()
	if info["nodes"] != "pve1,pve2,pve3" {
		t.Errorf("nodes: %s", line)
	}
	get := func(path string) string {
		hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} //nolint:gosec // test
		req, _ := http.NewRequest("GET", info["url"]+"/api2/json"+path, nil)
		req.Header.Set("Authorization", "PVEAPIToken="+info["token_id"]+"="+info["token_secret"])
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.Status + " " + string(body)
	}
	if got := get("/cluster/resources?type=storage"); !strings.Contains(got, `"id":"storage/pve3/ceph-vm"`) || !strings.Contains(got, `"shared":1`) {
		t.Errorf("storages: %s", got)
	}
	if got := get("/nodes/pve1/qemu/9000/config"); !strings.Contains(got, "ceph-vm:base-9000-disk-0") {
		t.Errorf("the template is on the shared storage: %s", got)
	}
	var out strings.Builder
	if err := run(ctx, []string{"node", "offline", "pve2", "--state", dir, "--power-loss"}, &out); err != nil || out.String() != "node pve2: offline\n" {
		t.Fatalf("node offline: %q %v", out.String(), err)
	}
	if got := get("/nodes/pve2/qemu"); !strings.HasPrefix(got, "595 No route to host") {
		t.Errorf("offline node: %s", got)
	}
	if err := run(ctx, []string{"node", "online", "pve2", "--state", dir}, io.Discard); err != nil {
		t.Fatal(err)
	}
	if got := get("/nodes/pve2/qemu"); !strings.HasPrefix(got, "200 OK") {
		t.Errorf("back online: %s", got)
	}
	for _, bad := range [][]string{{"node", "reboot", "pve2", "--state", dir}, {"node", "offline", "pve9", "--state", dir}, {"node", "offline"}} {
		if err := run(ctx, bad, io.Discard); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
