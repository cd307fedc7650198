package gateway

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/decent-stuff/dc-agent/internal/testutil"
)

// TestGatewayEndToEnd: after Assign, ssh to the public address and the
// block's first port reaches the VM's sshd (its host key, its address),
// with the client's own address, and from another VM on the bridge
// (hairpin, masqueraded to the bridge address); HTTPS for the VM's name reaches its
// web server through Caddy; block port 1 forwards TCP and UDP; traffic
// shows in the counters. After Release all of it is gone and the ports
// are given out again. A wiped table (a reboot) is put back by the next
// process that opens the gateway.
func TestGatewayEndToEnd(t *testing.T) {
	n := newTestNet(t, true)
	cid := contractID(1)

	a := n.assign(cid, vmIP)
	if a.PortStart != 20000 || a.PortEnd != 20009 || a.SSHPort() != 20000 || a.State != stateActive || a.PublicIP != publicIP {
		t.Fatalf("assignment %+v: want ports 20000-20009, active, public %s", a, publicIP)
	}
	if err := checkSlug(a.Slug); err != nil {
		t.Fatal(err)
	}
	if want := a.Slug + "." + dcID + ".gw.decent-cloud.org"; a.Subdomain != want {
		t.Fatalf("subdomain %q, want %q", a.Subdomain, want)
	}
	if recs := n.zoneRecords(); len(recs) != 1 || recs[a.Subdomain] != publicIP {
		t.Fatalf("DNS zone %v: want only %s → %s", recs, a.Subdomain, publicIP)
	}
	d, _ := json.Marshal(a.Details())
	for _, f := range []string{`"gateway_slug":"` + a.Slug + `"`, `"gateway_ssh_port":20000`, `"gateway_port_range_start":20000`, `"gateway_port_range_end":20009`, `"public_ip":"` + publicIP + `"`, `"gateway_subdomain":"` + a.Subdomain + `"`} {
		if !strings.Contains(string(d), f) {
			t.Errorf("instance details %s lack %s", d, f)
		}
	}

	// SSH through the gateway lands on the VM's sshd (StrictHostKeyChecking
	// with only the VM's key) and runs in the VM's network.
	out, err := n.sshVM(n.client, a.SSHPort(), "ip -4 -o addr show dev v0; echo from $SSH_CLIENT", "")
	if err != nil || !strings.Contains(out, vmIP+"/24") || !strings.Contains(out, "from "+clientIP+" ") {
		t.Fatalf("ssh -p %d %s: %v\n%s\nsshd log:\n%s", a.SSHPort(), publicIP, err, out, n.sshd.Log())
	}
	// Hairpin: another VM on the bridge reaches it through the public
	// address; the answer must come back through the host, so the
	// connection is masqueraded to the bridge address.
	if out, err := n.sshVM(n.vm2, a.SSHPort(), "echo from $SSH_CLIENT", ""); err != nil || !strings.HasPrefix(out, "from "+bridgeIP+" ") {
		t.Fatalf("ssh from another VM to the public port: %v\n%s", err, out)
	}
	// HTTPS by name through Caddy.
	body, err := n.curl(a.Subdomain, "/")
	if err != nil || body != n.index+"\n200" {
		t.Fatalf("curl https://%s/: %v\n%q, want %q", a.Subdomain, err, body, n.index+"\n200")
	}
	if _, err := os.Stat(filepath.Join(n.cfg.CaddySitesDir, a.Slug+".caddy")); err != nil {
		t.Fatal(err)
	}

	// Block port 1 → VM port 10001, TCP and UDP.
	tcpForward(t, n, a.PortStart+1, 10001)
	udpForward(t, n, a.PortStart+1, 10001)

	// Traffic: 1 MiB out of the VM through Caddy, 256 KiB in over SSH.
	before := n.stats()[cid]
	if out, err := n.curl(a.Subdomain, "/big.bin"); err != nil || len(out) < 1<<20 {
		t.Fatalf("download through Caddy: %v (%d bytes)", err, len(out))
	}
	if out, err := n.sshVM(n.client, a.SSHPort(), "wc -c", strings.Repeat("y", 256<<10)); err != nil || strings.TrimSpace(out) != strconv.Itoa(256<<10) {
		t.Fatalf("upload over ssh: %v %q", err, out)
	}
	after := n.stats()[cid]
	if after.GatewaySlug != a.Slug {
		t.Fatalf("stats %+v: want slug %s", after, a.Slug)
	}
	if after.BytesOut-before.BytesOut < 1<<20 || after.BytesIn-before.BytesIn < 256<<10 {
		t.Fatalf("counters moved in %d, out %d bytes; want ≥ 256 KiB in and ≥ 1 MiB out (before %+v after %+v)",
			after.BytesIn-before.BytesIn, after.BytesOut-before.BytesOut, before, after)
	}

	// A reboot empties the kernel: the next process opening the gateway
	// puts the forwarding back.
	n.host.Run(t, "nft", "delete", "table", "ip", TableName)
	if err := reach(n.client, publicIP+":"+strconv.Itoa(a.SSHPort())); err == nil {
		t.Fatal("the port still answers without the table")
	}
	n.gw("list")
	if out, err := n.sshVM(n.client, a.SSHPort(), "echo back", ""); err != nil || strings.TrimSpace(out) != "back" {
		t.Fatalf("ssh after the table was put back: %v %s", err, out)
	}

	// Release: nothing left.
	n.gw("release", cid)
	if err := reach(n.client, publicIP+":"+strconv.Itoa(a.SSHPort())); err == nil {
		t.Fatal("ssh port still forwarded after release")
	}
	if body, _ := n.curl(a.Subdomain, "/"); strings.Contains(body, n.index) {
		t.Fatalf("Caddy still routes %s after release: %q", a.Subdomain, body)
	}
	if recs := n.zoneRecords(); len(recs) != 0 {
		t.Fatalf("DNS records left: %v", recs)
	}
	if tab := n.table(); strings.Contains(tab, vmIP) || strings.Contains(tab, "20000") {
		t.Fatalf("rules left for the VM:\n%s", tab)
	}
	if _, err := os.Stat(filepath.Join(n.cfg.CaddySitesDir, a.Slug+".caddy")); !os.IsNotExist(err) {
		t.Fatalf("route file left: %v", err)
	}
	if l := n.gw("list"); strings.TrimSpace(l) != "null" {
		t.Fatalf("allocations left: %s", l)
	}
	// The ports are free: the next VM gets the same block.
	b := n.assign(contractID(2), vmIP)
	if b.PortStart != 20000 || b.Slug == a.Slug {
		t.Fatalf("next assignment %+v: want block 20000 again under a new slug", b)
	}
	if out, err := n.sshVM(n.client, b.SSHPort(), "echo again", ""); err != nil || strings.TrimSpace(out) != "again" {
		t.Fatalf("ssh to the new assignment: %v %s", err, out)
	}
}

func tcpForward(t *testing.T, n *testNet, public, vmPort int) {
	t.Helper()
	l, err := n.vm.Listen("tcp", vmIP+":"+strconv.Itoa(vmPort))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	got := make(chan string, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			got <- err.Error()
			return
		}
		defer c.Close()
		_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
		buf := make([]byte, 64)
		k, _ := c.Read(buf)
		got <- string(buf[:k]) + " from " + c.RemoteAddr().String()
	}()
	c, err := n.client.Dial("tcp", publicIP+":"+strconv.Itoa(public), 5*time.Second)
	if err != nil {
		t.Fatalf("tcp to %d: %v", public, err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("tcp-hello")); err != nil {
		t.Fatal(err)
	}
	// The VM sees the client's own address: only hairpin traffic masquerades.
	if s := <-got; !strings.HasPrefix(s, "tcp-hello from "+clientIP+":") {
		t.Fatalf("VM port %d got %q", vmPort, s)
	}
}

func udpForward(t *testing.T, n *testNet, public, vmPort int) {
	t.Helper()
	pc, err := n.vm.ListenPacket("udp", vmIP+":"+strconv.Itoa(vmPort))
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	c, err := n.client.Dial("udp", publicIP+":"+strconv.Itoa(public), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	got := make(chan string, 1)
	go func() {
		buf := make([]byte, 64)
		_ = pc.SetReadDeadline(time.Now().Add(20 * time.Second))
		k, from, err := pc.ReadFrom(buf)
		if err != nil {
			got <- err.Error()
			return
		}
		got <- string(buf[:k]) + " from " + from.String()
	}()
	// Datagrams may be lost; send until one arrives (the reader's deadline
	// bounds a failure).
	done := make(chan struct{})
	defer close(done)
	go func() {
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			_, _ = c.Write([]byte("udp-hello"))
			select {
			case <-done:
				return
			case <-tick.C:
			}
		}
	}()
	if s := <-got; !strings.HasPrefix(s, "udp-hello from "+clientIP+":") {
		t.Fatalf("VM udp port %d got %q", vmPort, s)
	}
}

// TestGatewayCrashBetweenAllocationAndReport kills the gateway's process
// (SIGKILL) at the two places a crash hurts — inside the DNS call right
// after the allocation was journaled, and after Assign returned but before
// the agent reported — then restarts: no port is given twice, a resumed
// provision gets the same block back, and Reconcile leaves no rule, route,
// record or allocation of the abandoned contracts.
func TestGatewayCrashBetweenAllocationAndReport(t *testing.T) {
	n := newTestNet(t, true)
	c1, c2, c3, c4 := contractID(1), contractID(2), contractID(3), contractID(4)

	// Killed inside the DNS create: the record was made at the API, the
	// gateway never learned its name.
	n.killedAfter("assign-hang-dns", c1, "10.77.0.9")
	if recs := n.zoneRecords(); len(recs) != 1 {
		t.Fatalf("zone %v: the killed create should have made one record", recs)
	}
	// A new VM does not get c1's block.
	a2 := n.assign(c2, "10.77.0.3")
	if a2.PortStart != 20010 {
		t.Fatalf("after the crash the next block is %d, want 20010 (20000 is still c1's)", a2.PortStart)
	}

	// Killed after Assign, before the report.
	lines := n.killedAfter("assign-hang", c3, vmIP)
	var a3 Assignment
	if len(lines) != 1 || json.Unmarshal([]byte(lines[0]), &a3) != nil || a3.PortStart != 20020 {
		t.Fatalf("assign before the kill printed %v, want the block at 20020", lines)
	}
	// The agent resumes the provision: same slug, same block, working.
	again := n.assign(c3, vmIP)
	if again.Slug != a3.Slug || again.PortStart != a3.PortStart || again.Subdomain != a3.Subdomain {
		t.Fatalf("resumed assign %+v, want the same as before the kill %+v", again, a3)
	}
	if out, err := n.sshVM(n.client, again.SSHPort(), "echo resumed", ""); err != nil || strings.TrimSpace(out) != "resumed" {
		t.Fatalf("ssh after the resumed assign: %v %s", err, out)
	}
	if el := n.nftElements(); len(el[setTCP]) != 20 || len(el[setUDP]) != 18 || len(el[setVMs]) != 2 {
		t.Fatalf("nft elements %v: want c2's and c3's blocks once each (20 tcp, 18 udp, 2 VMs)", el)
	}

	// c1 was abandoned (the agent gave up on it): Reconcile frees it and
	// deletes the record the killed call made.
	var res ReconcileResult
	if err := json.Unmarshal([]byte(n.gw("reconcile", c2, c3)), &res); err != nil {
		t.Fatal(err)
	}
	if len(res.Released) != 1 || res.Released[0].ContractID != c1 {
		t.Fatalf("reconcile released %+v, want c1 only", res.Released)
	}
	if recs := n.zoneRecords(); len(recs) != 2 {
		t.Fatalf("zone %v: want c2's and c3's records", recs)
	}
	// The freed block goes to the next VM.
	if a4 := n.assign(c4, "10.77.0.4"); a4.PortStart != 20000 {
		t.Fatalf("c1's freed block not reused: %+v", a4)
	}

	// c3's VM is gone too: nothing of it stays.
	if err := json.Unmarshal([]byte(n.gw("reconcile", c2, c4)), &res); err != nil {
		t.Fatal(err)
	}
	if len(res.Released) != 1 || res.Released[0].ContractID != c3 {
		t.Fatalf("reconcile released %+v, want c3", res.Released)
	}
	if tab := n.table(); strings.Contains(tab, vmIP) || strings.Contains(tab, "20020") {
		t.Fatalf("rules of c3 left:\n%s", tab)
	}
	if _, err := os.Stat(filepath.Join(n.cfg.CaddySitesDir, a3.Slug+".caddy")); !os.IsNotExist(err) {
		t.Fatalf("route of c3 left: %v", err)
	}
	if err := reach(n.client, publicIP+":"+strconv.Itoa(a3.SSHPort())); err == nil {
		t.Fatal("c3's ssh port still forwarded")
	}
	var list []Assignment
	if err := json.Unmarshal([]byte(n.gw("list")), &list); err != nil || len(list) != 2 || list[0].ContractID != c4 || list[1].ContractID != c2 {
		t.Fatalf("allocations %+v, want c4 at 20000 and c2 at 20010", list)
	}
	if recs := n.zoneRecords(); len(recs) != 2 {
		t.Fatalf("zone %v: want c2's and c4's records", recs)
	}
}

// TestGatewayHostChecks runs the doctor's gateway checks on the test
// network's host: it routes vmbr1, forwards, owns public_ip, and nftables,
// Caddy and the journal are usable; then the failures say what to fix.
func TestGatewayHostChecks(t *testing.T) {
	n := newTestNet(t, false)
	check := func(bridge string, vms ...string) map[string]Finding {
		var fs []Finding
		if err := json.Unmarshal([]byte(n.gw("check", append([]string{bridge}, vms...)...)), &fs); err != nil {
			t.Fatal(err)
		}
		out := map[string]Finding{}
		for _, f := range fs {
			if cur, ok := out[f.Check]; !ok || cur.Level == OK {
				out[f.Check] = f
			}
		}
		return out
	}
	got := check("vmbr1", "10.77.0.9")
	for _, c := range []string{"gateway forwarding", "gateway host", "gateway public_ip", "gateway nftables", "gateway caddy"} {
		if f, ok := got[c]; !ok || f.Level != OK {
			t.Errorf("%s: %+v, want ok", c, f)
		}
	}
	if f := got["gateway host"]; !strings.Contains(f.Message, "this host routes vmbr1 (10.77.0.1/24)") {
		t.Errorf("host: %+v", f)
	}

	// Not the routing host; no forwarding; a Caddyfile without the import.
	n.host.Run(t, "sh", "-c", "echo 0 > /proc/sys/net/ipv4/ip_forward")
	testutil.WriteFile(t, n.cfg.Caddyfile, "{\n\tadmin 127.0.0.1:2019\n}\n", 0o644)
	got = check("vmbr7", "10.99.0.2")
	for c, want := range map[string]string{
		"gateway forwarding": "net.ipv4.ip_forward=1",
		"gateway host":       "the agent is not on the host that routes the VMs' bridge",
		"gateway caddy":      "does not import " + n.cfg.CaddySitesDir + "/*.caddy",
	} {
		if f := got[c]; f.Level != Fail || !strings.Contains(f.Message+" "+f.Fix, want) {
			t.Errorf("%s: %+v, want a failure saying %q", c, f, want)
		}
	}
}
