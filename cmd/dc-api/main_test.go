package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"crypto/ed25519"
	"golang.org/x/crypto/ssh"
	"time"

	"github.com/decent-stuff/dc-agent/apiserver"
	"github.com/decent-stuff/dc-agent/apiserver/store"
	"github.com/decent-stuff/dc-agent/dcapi"
	"github.com/decent-stuff/dc-agent/identity"
	"github.com/decent-stuff/dc-agent/internal/testutil"
)

// The test binary doubles as the dc-api binary: tests run operator commands
// in a separate process, as an operator would next to a running server.
func TestMain(m *testing.M) {
	if os.Getenv("DC_API_TEST_AS_CLI") == "1" {
		os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
	}
	code := m.Run()
	testutil.StopSharedPostgres()
	os.Exit(code)
}

// cli runs dc-api args in this process (each command opens its own
// database handle, as a separate process would) and returns stdout,
// stderr and the exit code.
func cli(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(args, &out, &errb)
	return out.String(), errb.String(), code
}

// cliProcess runs dc-api args in a child process.
func cliProcess(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), "DC_API_TEST_AS_CLI=1")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), errb.String(), code
}

func mustCLI(t *testing.T, args ...string) string {
	t.Helper()
	out, errs, code := cli(t, args...)
	if code != 0 {
		t.Fatalf("dc-api %s: exit %d\n%s", strings.Join(args, " "), code, errs)
	}
	return out
}

func sshKey(t *testing.T) string {
	k, _ := identity.GenerateKey()
	// The same line format ssh-keygen writes.
	pk, err := sshPublicKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return pk
}

// TestOperatorCommandsWakeRunningServer: a contract created by the CLI in
// another process reaches an agent long-polling a running server at once,
// on SQLite and PostgreSQL; list/show/cancel see what the agent did.
func TestOperatorCommandsWakeRunningServer(t *testing.T) {
	for _, db := range []string{"sqlite", "postgres"} {
		t.Run(db, func(t *testing.T) {
			t.Parallel()
			dsn := "sqlite:" + filepath.Join(t.TempDir(), "dc-api.db")
			if db == "postgres" {
				dsn = testutil.PostgresDB(t)
			}
			prov, _ := identity.GenerateKey()
			provHex := identity.PublicHex(prov)
			if out := mustCLI(t, "--db", dsn, "provider", "add", provHex, "--name", "Acme"); strings.TrimSpace(out) != provHex {
				t.Fatalf("provider add printed %q", out)
			}

			// The server, in this process.
			ctx, cancel := context.WithCancel(context.Background())
			st, err := store.Open(ctx, dsn, store.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			srv, _ := apiserver.New(apiserver.Config{Store: st})
			ln, _ := net.Listen("tcp", "127.0.0.1:0")
			served := make(chan error, 1)
			go func() { served <- srv.Serve(ctx, ln, time.Second) }()
			defer func() {
				cancel()
				if err := <-served; err != nil {
					t.Errorf("serve: %v", err)
				}
			}()
			agent, _ := identity.GenerateKey()
			sd, _ := identity.Delegation{AgentPubkey: identity.PublicHex(agent), ProviderPubkey: provHex, Permissions: identity.AllPermissions}.Sign(prov)
			c, _ := dcapi.New("http://"+ln.Addr().String(), provHex, agent)
			if err := c.RegisterDelegation(ctx, sd); err != nil {
				t.Fatal(err)
			}

			type res struct {
				list []dcapi.PendingContract
				err  error
				took time.Duration
			}
			got := make(chan res, 1)
			go func() {
				start := time.Now()
				l, _, err := c.PendingContracts(ctx, 25*time.Second)
				got <- res{l, err, time.Since(start)}
			}()
			time.Sleep(100 * time.Millisecond)
			// Created by another process: the server learns of it through
			// the database (data_version + contract_events, or NOTIFY).
			out, errs, code := cliProcess(t, "--db", dsn, "contract", "create", "--provider", provHex, "--ssh-pubkey", sshKey(t),
				"--memory", "4 GB", "--storage", "40 GB", "--cpu", "2", "--city", "Zurich", "--provisioner-type", "script",
				"--provisioner-config", `{"a":1}`)
			if code != 0 {
				t.Fatalf("contract create: exit %d: %s", code, errs)
			}
			cid := strings.TrimSpace(out)
			if len(cid) != 64 {
				t.Fatalf("contract create printed %q, want the id alone", out)
			}
			r := <-got
			if r.err != nil || len(r.list) != 1 || r.list[0].ContractID != cid || *r.list[0].ProvisionerConfig != `{"a":1}` {
				t.Fatalf("long-poll = %+v", r)
			}
			if r.took > 20*time.Second {
				t.Fatalf("the CLI's contract did not wake the long-poll (took %s)", r.took)
			}

			if err := c.UpdateProvisioning(ctx, cid, dcapi.ProvisioningUpdate{Status: dcapi.StatusProvisioning}); err != nil {
				t.Fatal(err)
			}
			up, _ := dcapi.ProvisionedUpdate(dcapi.InstanceDetails{ExternalID: "ct-7", IPAddress: "192.0.2.7"})
			if err := c.UpdateProvisioning(ctx, cid, up); err != nil {
				t.Fatal(err)
			}
			var shown map[string]any
			if err := json.Unmarshal([]byte(mustCLI(t, "--db", dsn, "contract", "show", cid, "--json")), &shown); err != nil {
				t.Fatal(err)
			}
			if shown["contract_id"] != cid || shown["status"] != "provisioned" || !strings.Contains(shown["instance_details"].(string), "ct-7") {
				t.Fatalf("show --json = %v", shown)
			}
			var listed []map[string]any
			if err := json.Unmarshal([]byte(mustCLI(t, "--db", dsn, "contract", "list", "--json")), &listed); err != nil || len(listed) != 1 {
				t.Fatalf("list --json = %v %v", listed, err)
			}
			if text := mustCLI(t, "--db", dsn, "contract", "show", cid); !strings.Contains(text, "provisioned") || !strings.Contains(text, "ct-7") {
				t.Fatalf("show = %s", text)
			}
			mustCLI(t, "--db", dsn, "contract", "cancel", cid)
			act, err := c.ActiveContracts(ctx)
			if err != nil || len(act) != 1 || act[0].Status != "cancelled" {
				t.Fatalf("active after CLI cancel = %+v %v", act, err)
			}
		})
	}
}

func TestCLIErrors(t *testing.T) {
	dsn := "sqlite:" + filepath.Join(t.TempDir(), "x.db")
	prov, _ := identity.GenerateKey()
	provHex := identity.PublicHex(prov)
	cases := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"provider", "add", "zz"}, 2, "64 hex"},
		{[]string{"contract", "create", "--provider", provHex}, 2, "ssh-pubkey"},
		{[]string{"contract", "create", "--provider", provHex, "--ssh-pubkey", "nope"}, 2, "not an SSH public key"},
		{[]string{"contract", "create", "--provider", provHex, "--ssh-pubkey", sshKey(t), "--memory", "lots"}, 2, "--memory"},
		{[]string{"contract", "create", "--provider", provHex, "--ssh-pubkey", sshKey(t), "--provisioner-config", "{"}, 2, "not valid JSON"},
		{[]string{"contract", "create", "--provider", provHex, "--ssh-pubkey", sshKey(t)}, 1, "not registered"},
		{[]string{"contract", "show", strings.Repeat("a", 64)}, 1, "not found"},
		{[]string{"contract", "cancel", "xyz"}, 1, "64 lowercase hex"},
		{[]string{"--db", "mysql://x", "migrate"}, 1, "sqlite:PATH or postgres://"},
		{[]string{"serve", "--log-format", "xml"}, 2, "--log-format"},
		{[]string{"serve", "--replay-cache", "disk"}, 2, "--replay-cache \"disk\": use memory or database"},
		{[]string{"serve", "--profile", "live", "--replay-cache", "database"}, 2, "the live profile has no replay cache"},
		{[]string{"nope"}, 2, "unknown command"},
	}
	for _, tc := range cases {
		args := append([]string{"--db", dsn}, tc.args...)
		_, errs, code := cli(t, args...)
		if code != tc.code || !strings.Contains(errs, tc.want) {
			t.Errorf("dc-api %s: exit %d, stderr %q; want exit %d mentioning %q", strings.Join(tc.args, " "), code, errs, tc.code, tc.want)
		}
	}
	// Migrated to the latest schema, whatever its number.
	out := mustCLI(t, "--db", dsn, "migrate")
	if m := regexp.MustCompile(`schema version (\d+) \(latest (\d+)\)`).FindStringSubmatch(out); m == nil || m[1] != m[2] {
		t.Errorf("migrate = %q", out)
	}
}

func sshPublicKey(k ed25519.PrivateKey) (string, error) {
	pk, err := ssh.NewPublicKey(k.Public())
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pk))) + " test@host", nil
}

// TestPoolAndStateCommands: pool create/list/delete, setup-token create
// (a one-time token that registers one agent), contract create --pool
// --country, and pause/resume/expire, on SQLite.
func TestPoolAndStateCommands(t *testing.T) {
	dsn := "sqlite:" + filepath.Join(t.TempDir(), "dc-api.db")
	prov, _ := identity.GenerateKey()
	provHex := identity.PublicHex(prov)
	mustCLI(t, "--db", dsn, "provider", "add", provHex)
	poolID := strings.TrimSpace(mustCLI(t, "--db", dsn, "pool", "create", "--provider", provHex, "--name", "eu-docker", "--location", "europe", "--provisioner-type", "docker"))
	if !strings.HasPrefix(poolID, "eu-docker-") || len(poolID) != len("eu-docker-")+8 {
		t.Fatalf("pool create printed %q", poolID)
	}
	tok := strings.TrimSpace(mustCLI(t, "--db", dsn, "setup-token", "create", "--pool", poolID, "--ttl", "2h"))
	if !regexp.MustCompile(`^apt_europe_[0-9a-f]{16}$`).MatchString(tok) {
		t.Fatalf("setup-token create printed %q", tok)
	}
	cid := strings.TrimSpace(mustCLI(t, "--db", dsn, "contract", "create", "--provider", provHex, "--ssh-pubkey", sshKey(t), "--pool", poolID, "--country", "de"))

	st, err := store.Open(context.Background(), dsn, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	agent, _ := identity.GenerateKey()
	now := time.Now().UnixNano()
	if _, err := st.UseSetupToken(context.Background(), tok, identity.PublicHex(agent), now); err != nil {
		t.Fatalf("the printed token does not register an agent: %v", err)
	}
	if _, err := st.UseSetupToken(context.Background(), tok, identity.PublicHex(prov), now); err == nil {
		t.Fatal("a setup token registered two agents")
	}
	c, err := st.GetContract(context.Background(), cid)
	if err != nil || *c.AgentPoolID != poolID || *c.DatacenterCountry != "DE" {
		t.Fatalf("contract %+v %v", c, err)
	}
	var pools []store.PoolStats
	if err := json.Unmarshal([]byte(mustCLI(t, "--db", dsn, "pool", "list", "--provider", provHex, "--json")), &pools); err != nil ||
		len(pools) != 1 || pools[0].PoolID != poolID || pools[0].AgentCount != 1 || pools[0].OfferingsCount != 1 {
		t.Fatalf("pool list = %+v, %v", pools, err)
	}
	if _, errs, code := cli(t, "--db", dsn, "pool", "delete", poolID, "--provider", provHex); code != 1 || !strings.Contains(errs, "Revoke agents first") {
		t.Fatalf("pool delete with an agent: exit %d %s", code, errs)
	}

	// Provision it, then pause, resume and expire.
	st.UpdateProvisioning(context.Background(), provHex, cid, identity.PublicHex(agent), dcapi.ProvisioningUpdate{Status: dcapi.StatusProvisioning}, now)
	u, _ := dcapi.ProvisionedUpdate(dcapi.InstanceDetails{ExternalID: "vm-1"})
	if _, err := st.UpdateProvisioning(context.Background(), provHex, cid, identity.PublicHex(agent), u, now); err != nil {
		t.Fatal(err)
	}
	for _, step := range []struct{ args, want string }{
		{"pause " + cid + " --reason stripe_dispute:du_1", "is paused"},
		{"resume " + cid, "is active"},
		{"expire " + cid, "is expired"},
	} {
		if out := mustCLI(t, append([]string{"--db", dsn, "contract"}, strings.Fields(step.args)...)...); !strings.Contains(out, step.want) {
			t.Fatalf("contract %s printed %q", step.args, out)
		}
	}
	if _, errs, code := cli(t, "--db", dsn, "contract", "pause", cid); code != 1 || !strings.Contains(errs, "cannot transition to paused") {
		t.Fatalf("pause of an expired contract: exit %d %s", code, errs)
	}
	for _, bad := range [][]string{
		{"pool", "create", "--provider", provHex, "--name", "x", "--location", "mars"},
		{"setup-token", "create", "--pool", poolID, "--ttl", "0s"},
		{"contract", "create", "--provider", provHex, "--ssh-pubkey", sshKey(t), "--country", "XX"},
	} {
		if _, _, code := cli(t, append([]string{"--db", dsn}, bad...)...); code != exitUsage {
			t.Errorf("dc-api %v: exit %d, want %d", bad, code, exitUsage)
		}
	}
	if _, errs, code := cli(t, "--db", dsn, "setup-token", "create", "--pool", "nope-00000000"); code != 1 || !strings.Contains(errs, "Pool not found") {
		t.Fatalf("token for an unknown pool: exit %d %s", code, errs)
	}
	if _, errs, code := cli(t, "--db", dsn, "serve", "--profile", "staging"); code != exitUsage || !strings.Contains(errs, "--profile") {
		t.Fatalf("serve --profile staging: exit %d %s", code, errs)
	}
}
