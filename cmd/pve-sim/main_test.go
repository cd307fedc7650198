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

func TestPrintsConnectionLineAndServes(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	dir := t.TempDir()
	go func() {
		done <- run(ctx, []string{"--listen", "127.0.0.1:0", "--state", dir, "--node", "pve7", "--pve-version", "8.4", "--timing", "fast"}, pw)
		pw.Close()
	}()
	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		t.Fatalf("no line: %v (%v)", err, <-done)
	}
	var info map[string]string
	if err := json.Unmarshal([]byte(line), &info); err != nil {
		t.Fatal(err)
	}
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
