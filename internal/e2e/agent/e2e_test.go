// Package agente2e runs the real dc-agent binary (`dc-agent run`) against the
// reference API server (real HTTP, real SQLite) with the script provisioner
// driving the demo backend: end-to-end behaviour, crash safety under
// SIGKILL at every step, API outages, revoked delegations, sd_notify and a
// real systemd --user unit.
package agente2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/decent-stuff/dc-agent/agent/status"
	"github.com/decent-stuff/dc-agent/apiserver/apitest"
	"github.com/decent-stuff/dc-agent/apiserver/store"
	"github.com/decent-stuff/dc-agent/dcapi"
	"github.com/decent-stuff/dc-agent/identity"
	"github.com/decent-stuff/dc-agent/internal/e2e/e2eutil"
)

// failureText is a contract's last error: dc-api keeps the error text, the
// live API the whole failure details JSON.
func failureText(s string) string {
	var fd dcapi.FailureDetails
	if json.Unmarshal([]byte(s), &fd) == nil && fd.Error != "" {
		return fd.Error
	}
	return s
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// TestEndToEnd runs one agent against each dc-api profile: the password
// reaches only the requester (sealed by the agent where dc-api hands over
// requester_pubkey, in clear over loopback and encrypted by the server on
// the live API, which never does), a backend failure and a refused
// instance_config are reported once, heartbeats keep the provider online,
// every live contract gets health checks (live: from the backend's list
// and reconcile, per contract), status agrees, cancel terminates.
func TestEndToEnd(t *testing.T) {
	eachProfile(t, testEndToEnd)
}

func testEndToEnd(t *testing.T, prof e2eutil.Profile) {
	w := newWorld(t, withProfile(prof))
	requester, _ := identity.GenerateKey()
	ok := w.contract(apitest.ContractSpec{
		RequesterPubkey: apitest.Ptr(identity.PublicHex(requester)),
		CPUCores:        apitest.Ptr(2), MemoryAmount: apitest.Ptr("4 GB"), StorageCapacity: apitest.Ptr("1 TB"),
		ProvisionerConfig: apitest.Ptr(`{"template":"ubuntu-24.04"}`), InstanceConfig: apitest.Ptr(`{"hostname":"web1"}`),
	})
	bad := w.contract(apitest.ContractSpec{InstanceConfig: apitest.Ptr(`{"fail":"template debian-13 does not exist"}`)})
	// The requester asks for a static address on the provider's network: a
	// key neither the script backend nor the provider lets a contract set.
	refused := w.contract(apitest.ContractSpec{InstanceConfig: apitest.Ptr(`{"hostname":"web2","ipconfig0":"ip=10.0.0.5/24"}`)})
	p := w.startAgent(nil)

	// Provisioned, with a password only the requester can read.
	waitLive(t, w, ok)
	c := w.srv.Contract(ok)
	d, has := w.srv.InstanceDetails(ok)
	if !has || d.ExternalID == "" || d.IPAddress == "" {
		t.Fatalf("instance details = %+v", d)
	}
	if strings.Contains(*c.InstanceDetails, `"pw-`) {
		t.Fatalf("plaintext password stored: %s", *c.InstanceDetails)
	}
	pw, err := identity.Open(d.RootPassword, requester)
	if err != nil || !strings.HasPrefix(string(pw), "pw-") {
		t.Fatalf("requester cannot open the sealed password: %q, %v", pw, err)
	}
	other, _ := identity.GenerateKey()
	if _, err := identity.Open(d.RootPassword, other); err == nil {
		t.Fatal("another key opened the sealed password")
	}
	insts := w.backend.Instances()
	if len(insts) != 1 || insts[0].ExternalID != d.ExternalID || insts[0].CPUCores != 2 || insts[0].MemoryMB != 4096 || insts[0].StorageGB != 1024 {
		t.Fatalf("backend instances = %+v", insts)
	}

	// A backend failure is reported as provisioning_failed, not retried when it cannot help.
	fc := w.srv.WaitForStatus(bad, dcapi.StatusProvisioningFailed, 20*time.Second)
	if fc.LastError == nil || !strings.Contains(failureText(*fc.LastError), "template debian-13 does not exist") {
		t.Fatalf("failure = %v", fc.LastError)
	}

	// A refused instance_config fails for good, says why and how the
	// provider allows it, and never reaches the backend.
	rc := w.srv.WaitForStatus(refused, dcapi.StatusProvisioningFailed, 20*time.Second)
	if rc.LastError == nil || !strings.Contains(failureText(*rc.LastError), `instance_config sets "ipconfig0", which a contract may not set on this provider's script backend (contracts may set: "fail", "hostname"); the provider can allow it with instance_config_allow = ["ipconfig0"]`) {
		t.Fatalf("refused instance_config: last error %v", rc.LastError)
	}
	// dc-api keeps the failure details; live keeps them as the error text.
	if details := deref(rc.InstanceDetails) + deref(rc.LastError); rc.OfferAfterNs != nil || !strings.Contains(details, `"retry_possible":false`) {
		t.Fatalf("refused instance_config is retried: offer_after %v, details %s", rc.OfferAfterNs, details)
	}
	for _, cid := range []string{bad, refused} {
		if c := w.srv.Contract(cid); c.FailureCount != 1 {
			t.Fatalf("contract %s: %d failures reported, want 1", cid, c.FailureCount)
		}
	}
	calls, err := w.backend.Calls()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range calls {
		if c.ContractID == refused {
			t.Fatalf("the backend was called for the refused contract: %+v", c)
		}
	}

	// Heartbeat: online, with what the agent can do, every one accepted.
	eventually(t, 10*time.Second, "provider online", func() bool { return w.srv.AgentStatus(w.prov).Online })
	as := w.srv.AgentStatus(w.prov)
	if as.ProvisionerType == nil || *as.ProvisionerType != "script" || as.Version == nil {
		t.Fatalf("agent status = %+v", as)
	}
	eventually(t, 10*time.Second, "activeContracts 1 in a heartbeat", func() bool { return w.srv.AgentStatus(w.prov).ActiveContracts == 1 })
	if all, ok := w.srv.CountRequests("POST", "/heartbeat", 0), w.srv.CountRequests("POST", "/heartbeat", 200); all != ok {
		t.Fatalf("%d of %d heartbeats refused", all-ok, all)
	}

	// Health stored for the live contract, and uptime computed from it.
	eventually(t, 20*time.Second, "health stored", func() bool {
		for _, h := range w.srv.HealthChecks(ok) {
			if h.Status == dcapi.HealthHealthy && strings.Contains(h.Details, "uptime_seconds") {
				return true
			}
		}
		return false
	})
	if sum := w.srv.HealthSummary(w.prov, 30); sum.TotalChecks == 0 || sum.UptimePercent != 100 {
		t.Fatalf("health summary = %+v", sum)
	}

	// The status socket tells the same story.
	st, err := w.state()
	if err != nil {
		t.Fatal(err)
	}
	if !st.Online || st.Counts.Provisioned != 1 || st.Counts.Failed != 2 || !strings.HasPrefix(st.Line, "online · 1 active") {
		t.Fatalf("state: %s %+v", st.Line, st.Counts)
	}
	if len(st.Ending) != 1 || st.Ending[0].ContractID != ok || st.Ending[0].EndsAt == nil || st.Ending[0].EndsAt.Before(time.Now().Add(29*24*time.Hour)) {
		t.Fatalf("contracts with their end (reconcile's keep): %+v", st.Ending)
	}
	if prof.Live && (st.Pool == nil || st.Pool.ID != w.acc.Pool.PoolID || st.Pool.Name != "e2e") {
		t.Fatalf("pool in status: %+v", st.Pool)
	}

	// Cancelled: the instance is terminated and reported.
	w.srv.CancelContract(ok)
	eventually(t, 20*time.Second, "instance terminated", func() bool {
		return len(w.backend.Instances()) == 0 && w.srv.Contract(ok).TerminatedAtNs != nil
	})

	// Stopping: still online within the window, offline after it.
	p.stop()
	if !w.srv.AgentStatus(w.prov).Online {
		t.Fatal("offline right after stopping; the window is 5 minutes")
	}
	w.srv.SetClockOffset(6 * time.Minute)
	if w.srv.AgentStatus(w.prov).Online {
		t.Fatal("still online 6 minutes after the last heartbeat")
	}
}

// A transient backend failure is retried by the agent itself, within its
// budget, and never reported: on the live API a reported failure is final
// and refunds the tenant.
func TestTransientFailureRetried(t *testing.T) {
	eachProfile(t, func(t *testing.T, p e2eutil.Profile) {
		w := newWorld(t, withProfile(p))
		if err := w.backend.Set("fail-times", "2:no capacity on node pve1"); err != nil {
			t.Fatal(err)
		}
		cid := w.contract(apitest.ContractSpec{})
		w.startAgent(nil)
		waitLive(t, w, cid)
		if c := w.srv.Contract(cid); c.FailureCount != 0 {
			t.Fatalf("%d failures reported for a transient problem", c.FailureCount)
		}
		if n := w.provisionCalls()[cid]; n != 3 {
			t.Fatalf("provision called %d times, want 3 (two failures, then success)", n)
		}
		checkExactlyOnce(t, w, []string{cid})
	})
}

// Once the retry budget is spent, a transient failure is reported, once,
// as retryable; a permanent one at once, without retries.
func TestFailureReportedOnceBudgetSpent(t *testing.T) {
	eachProfile(t, func(t *testing.T, p e2eutil.Profile) {
		// 100 s of retries = 1 s at this time scale.
		w := newWorld(t, withProfile(p), func(c *worldConfig) { c.agentExtra = "provision_retry_seconds = 100" })
		if err := w.backend.Set("fail", "no capacity on node pve1"); err != nil {
			t.Fatal(err)
		}
		transient := w.contract(apitest.ContractSpec{})
		permanent := w.contract(apitest.ContractSpec{InstanceConfig: apitest.Ptr(`{"fail":"image ubuntu-9 does not exist"}`)})
		w.startAgent(nil)
		for _, cid := range []string{transient, permanent} {
			w.srv.WaitForContract(cid, 30*time.Second, func(c *store.Contract) bool { return c.FailureCount > 0 }, "the failure reported")
		}
		calls := w.provisionCalls()
		if calls[permanent] != 1 || calls[transient] < 2 {
			t.Fatalf("provision calls: permanent %d (want 1), transient %d (want retries)", calls[permanent], calls[transient])
		}
		c := w.srv.Contract(transient)
		if c.LastError == nil || !strings.Contains(failureText(*c.LastError), "no capacity on node pve1") {
			t.Fatalf("reported error %v", c.LastError)
		}
		if len(w.backend.Instances()) != 0 {
			t.Fatalf("failed attempts left %+v", w.backend.Instances())
		}
		// Reported once: the agent does not take the contract again by itself.
		n := w.srv.CountRequests("PUT", "/provisioning", 0)
		m := w.srv.CountRequests("GET", "/pending-provision", 0)
		eventually(t, 20*time.Second, "more polls", func() bool { return w.srv.CountRequests("GET", "/pending-provision", 0) > m+10 })
		// dc-api offers a retryable failure again (up to its attempts), live never.
		if w.srv.Contract(permanent).FailureCount != 1 || p.Live && (w.srv.CountRequests("PUT", "/provisioning", 0) != n || w.srv.Contract(transient).FailureCount != 1) {
			t.Fatal("a failure was reported again")
		}
	})
}

// A paused contract's instance is stopped, not destroyed, and gets no
// health checks; resumed, it is started again (script pause/resume
// actions of the demo backend).
func TestPauseResume(t *testing.T) {
	eachProfile(t, func(t *testing.T, p e2eutil.Profile) {
		w := newWorld(t, withProfile(p))
		cid := w.contract(apitest.ContractSpec{})
		w.startAgent(nil)
		waitLive(t, w, cid)
		if _, err := w.srv.Store.PauseContract(context.Background(), cid, "stripe_dispute:du_1", w.srv.Now().UnixNano()); err != nil {
			t.Fatal(err)
		}
		eventually(t, 20*time.Second, "the instance stopped", func() bool {
			in := w.backend.Instances()
			return len(in) == 1 && in[0].Stopped
		})
		eventually(t, 10*time.Second, "status shows it paused", func() bool {
			st, err := w.state()
			return err == nil && len(st.Paused) == 1 && st.Paused[0].ContractID == cid && st.Paused[0].Reason == "stripe_dispute:du_1"
		})
		pausedAt := time.Now()
		if _, err := w.srv.Store.ResumeContract(context.Background(), cid, w.srv.Now().UnixNano()); err != nil {
			t.Fatal(err)
		}
		eventually(t, 20*time.Second, "the instance started again", func() bool {
			in := w.backend.Instances()
			return len(in) == 1 && !in[0].Stopped
		})
		eventually(t, 20*time.Second, "healthy again", func() bool {
			hs := w.srv.HealthChecks(cid)
			return len(hs) > 0 && hs[len(hs)-1].Status == dcapi.HealthHealthy && time.Unix(0, hs[len(hs)-1].CheckedAt).After(pausedAt)
		})
		for _, h := range w.srv.HealthChecks(cid) {
			if h.Status != dcapi.HealthHealthy {
				t.Fatalf("a check while paused: %+v", h)
			}
		}
		checkExactlyOnce(t, w, []string{cid})
		if st, err := w.state(); err != nil || len(st.Paused) != 0 {
			t.Fatalf("still listed as paused: %+v %v", st.Paused, err)
		}
	})
}

func TestRevokedDelegationStopsRetrying(t *testing.T) {
	w := newWorld(t)
	w.startAgent(nil)
	eventually(t, 10*time.Second, "online", func() bool { return w.srv.AgentStatus(w.prov).Online })
	w.srv.RevokeDelegation(w.prov, identity.PublicHex(w.agentKey))
	var st status.State
	eventually(t, 10*time.Second, "the agent says the delegation is revoked", func() bool {
		var err error
		st, err = w.state()
		return err == nil && len(st.Problems) > 0 && strings.Contains(st.Line, "STOPPED")
	})
	p := st.Problems[0]
	if !strings.Contains(strings.ToLower(p.Message), "revoked") || !strings.Contains(p.Fix, "dc-agent delegation request") {
		t.Fatalf("problem = %+v", p)
	}
	// Every loop that talks to the API has stopped: no more requests.
	eventually(t, 10*time.Second, "all API loops stopped", func() bool {
		st, _ = w.state()
		for _, l := range st.Loops {
			if l.Name != "outbox" && l.Name != "reconcile" && l.State != status.LoopStopped {
				return false
			}
		}
		return true
	})
	n := w.srv.CountRequests("", "/api/v1/", 0)
	time.Sleep(1500 * time.Millisecond) // more than two backoff caps at this time scale
	if m := w.srv.CountRequests("", "/api/v1/", 0); m > n+2 {
		t.Fatalf("the agent kept calling the API with a revoked delegation: %d → %d requests", n, m)
	}
}

func TestAPIDownNoReportLost(t *testing.T) {
	w := newWorld(t, func(c *worldConfig) { c.maxConc = 8 })
	if err := w.backend.Set("delay", "1s"); err != nil {
		t.Fatal(err)
	}
	w.startAgent(nil)
	eventually(t, 10*time.Second, "online", func() bool { return w.srv.AgentStatus(w.prov).Online })
	var cids []string
	for i := 0; i < 5; i++ {
		cids = append(cids, w.contract(apitest.ContractSpec{}))
	}
	// The API goes away while the instances are being made.
	eventually(t, 10*time.Second, "provisioning under way", func() bool { return len(w.provisionCalls()) == len(cids) })
	w.srv.Stop()
	eventually(t, 30*time.Second, "every report queued while the API is down", func() bool {
		st, err := w.state()
		return err == nil && st.Counts.Outbox == len(cids)
	})
	// Backoff rounds against a dead port, until the wait has grown to its
	// cap (60 s, 600 ms at this time scale: 10 ms doubled 6 times): the
	// next attempt the agent schedules is never further away than the cap,
	// so once the API is back, delivery resumes within one cap.
	backoffCap := time.Duration(float64(60*time.Second) * timeScale)
	var longest time.Duration
	eventually(t, 30*time.Second, "the outbox backing off up to its cap", func() bool {
		st, err := w.state()
		if err != nil {
			return false
		}
		for _, l := range st.Loops {
			if l.Name == "outbox" && l.State == status.LoopBackoff && l.NextAttempt != nil {
				longest = max(longest, l.NextAttempt.Sub(st.Now))
				if longest > backoffCap {
					t.Fatalf("the outbox scheduled its next attempt %s ahead, beyond the %s cap", longest, backoffCap)
				}
				return l.Failures >= 9
			}
		}
		return false
	})
	back := time.Now()
	w.srv.Restart()
	for _, cid := range cids {
		waitLive(t, w, cid)
	}
	recovered := time.Since(back)
	eventually(t, 10*time.Second, "the outbox backoff reset after the API came back", func() bool {
		st, err := w.state()
		if err != nil || st.Counts.Outbox != 0 {
			return false
		}
		for _, l := range st.Loops {
			if l.Name == "outbox" {
				return l.Failures == 0 && l.State != status.LoopBackoff
			}
		}
		return false
	})
	for cid, n := range w.instancesByContract() {
		if n != 1 {
			t.Fatalf("contract %s has %d instances", cid, n)
		}
	}
	t.Logf("all %d reports delivered %s after the API came back (longest scheduled backoff %s, cap %s)", len(cids), recovered.Round(time.Millisecond), longest.Round(time.Millisecond), backoffCap)
}

// Failed and lost answers are retried; against the live API a lost answer
// to "provisioning" makes the retry look like a repeat, which it refuses.
func TestAPIErrorsAreRetried(t *testing.T) {
	eachProfile(t, testAPIErrorsAreRetried)
}

func testAPIErrorsAreRetried(t *testing.T, p e2eutil.Profile) {
	w := newWorld(t, withProfile(p))
	cid := w.contract(apitest.ContractSpec{})
	// Every write the agent makes fails a few times first.
	w.srv.FailNext("PUT", "/provisioning", 3, http.StatusServiceUnavailable)
	w.srv.FailNext("POST", "/lock", 2, http.StatusTooManyRequests)
	w.srv.LoseResponseNext("PUT", "/provisioning", 2)
	w.startAgent(nil)
	waitLive(t, w, cid)
	if n := w.provisionCalls()[cid]; n != 1 {
		t.Fatalf("provision called %d times", n)
	}
}

func TestStatusCommand(t *testing.T) {
	w := newWorld(t)
	w.startAgent(nil)
	eventually(t, 10*time.Second, "online", func() bool { st, err := w.state(); return err == nil && st.Online })
	out := runCLI(t, "status", "--config", w.cfgPath)
	if !strings.HasPrefix(out, "online · 0 active") || !strings.Contains(out, "provisioners:\n  script (default)") {
		t.Fatalf("dc-agent status:\n%s", out)
	}
	var st status.State
	if err := json.Unmarshal([]byte(runCLI(t, "status", "--json", "--config", w.cfgPath)), &st); err != nil || st.Provider != w.prov.Pubkey {
		t.Fatalf("status --json: %v %+v", err, st)
	}
}

// TestStatusFollowAndJSONLogs: `dc-agent status --follow --json` streams
// the agent's events as JSON lines (a contract's whole way to provisioned)
// and ends cleanly when the agent stops; `run --log-format json` logs only
// JSON objects to stderr.
func TestStatusFollowAndJSONLogs(t *testing.T) {
	w := newWorld(t)
	p := w.startAgent(nil)
	eventually(t, 10*time.Second, "online", func() bool { st, err := w.state(); return err == nil && st.Online })

	follow := exec.Command(dcAgent, "status", "--follow", "--json", "--config", w.cfgPath)
	follow.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(), "LANG=C.UTF-8"}
	var ferr bytes.Buffer
	follow.Stderr = &ferr
	out, err := follow.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := follow.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = follow.Process.Kill(); _ = follow.Wait() })
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()

	cid := w.contract(apitest.ContractSpec{})
	kinds := map[string]bool{}
	timeout := time.After(30 * time.Second)
	for !kinds[status.EventProvisioned] || !kinds[status.EventReportSent] {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("the event stream ended early; stderr: %s", ferr.String())
			}
			var ev status.Event
			if err := json.Unmarshal([]byte(l), &ev); err != nil || ev.Seq == 0 || ev.Kind == "" {
				t.Fatalf("--follow --json printed %q (%v), want one event object a line", l, err)
			}
			if ev.ContractID == cid {
				kinds[ev.Kind] = true
			}
		case <-timeout:
			t.Fatalf("events of contract %s seen: %v", cid, kinds)
		}
	}
	p.stop()
	for l := range lines {
		var ev status.Event
		if err := json.Unmarshal([]byte(l), &ev); err != nil {
			t.Fatalf("--follow --json printed %q after the agent stopped, want JSON events only", l)
		}
	}
	if err := follow.Wait(); err != nil {
		t.Fatalf("status --follow exited with %v when the agent stopped: %s", err, ferr.String())
	}
	if !strings.Contains(ferr.String(), "the agent closed the stream") {
		t.Fatalf("no end-of-stream notice on stderr: %q", ferr.String())
	}

	logged := 0
	for _, l := range strings.Split(strings.TrimSpace(p.stderr.String()), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(l), &rec); err != nil || rec["time"] == nil || rec["level"] == nil || rec["msg"] == nil {
			t.Fatalf("run --log-format json wrote %q, want a JSON object with time, level and msg", l)
		}
		logged++
	}
	if logged < 5 {
		t.Fatalf("only %d log lines", logged)
	}
}
