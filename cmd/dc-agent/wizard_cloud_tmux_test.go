package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/decent-stuff/dc-agent/apiserver"
	"github.com/decent-stuff/dc-agent/apiserver/apitest"
	"github.com/decent-stuff/dc-agent/config"
	"github.com/decent-stuff/dc-agent/identity"
	dosim "github.com/decent-stuff/dc-agent/internal/sim/digitalocean"
	"github.com/decent-stuff/dc-agent/internal/testutil"
	"github.com/decent-stuff/dc-agent/setup"
)

// TestWizardCloudInTmux walks the wizard to a DigitalOcean backend in a
// real terminal, against the simulated DigitalOcean API and dc-api's live
// profile: the backend screen offers DigitalOcean and Vultr next to
// Proxmox; a token the API rejects is explained on the account screen; the
// accepted one lists the regions; the plan registers the agent with the
// setup token and writes the config the `setup digitalocean` command
// writes; the service files are installed; no SSH is asked for.
func TestWizardCloudInTmux(t *testing.T) {
	t.Parallel()
	x := newTmuxTerm(t, artifactDir(t, "wizard-cloud"))
	do := dosim.New(dosim.Options{CreateDuration: time.Millisecond})
	doURL := do.Start(t)
	srv := apitest.Start(t, apitest.WithProfile(apiserver.ProfileLive))
	prov := srv.NewProvider("Acme")
	pool := srv.NewPool(prov, "eu-cloud", "europe", "digitalocean")
	tok := srv.SetupToken(pool, time.Hour)

	dir := t.TempDir()
	cfg := filepath.Join(dir, "dc-agent.toml")
	good, wrong := filepath.Join(dir, "do-token"), filepath.Join(dir, "wrong-token")
	testutil.WriteFile(t, good, do.Token()+"\n", 0o600)
	testutil.WriteFile(t, wrong, "not-the-token\n", 0o600)
	cmdline := append(cleanEnv(t.TempDir(), "TERM=xterm-256color", "NO_COLOR=1"),
		dcAgent, "--config", cfg, "--service-root", filepath.Join(dir, "root"), "--cloud-endpoint", doURL, "--state-dir", filepath.Join(dir, "state"))
	exitFile := x.start(cmdline, filepath.Join(dir, "exit"))

	x.waitFor(10*time.Second, "1/11 Welcome", "enter start")
	x.key("Enter")
	x.waitFor(5*time.Second, "2/11 Decent Cloud API", "(•) setup token")
	x.key("C-u")
	x.typeText(srv.URL)
	x.key("Tab")
	x.key("Tab")
	x.paste(tok)
	x.waitFor(5*time.Second, strings.Repeat("*", len(tok)))
	x.key("Enter")

	x.waitFor(5*time.Second, "3/11 Backend", "(•) Proxmox VE", "DigitalOcean", "Vultr")
	x.key("Down")
	x.waitFor(5*time.Second, "(•) DigitalOcean")
	x.snap("backend")
	x.key("Enter")

	x.waitFor(5*time.Second, "4/10 Cloud account", "Token file")
	x.typeText(wrong)
	x.key("Enter")
	x.waitFor(10*time.Second, "rejected", "Fix: check the token")
	x.snap("cloud-token-rejected")
	x.key("C-u")
	x.typeText(good)
	x.key("Enter")
	x.waitFor(10*time.Second, "4/10 Cloud account", "DigitalOcean account", "regions", "(•) nyc3")
	x.key("Up")
	x.waitFor(5*time.Second, "(•) nyc1")
	x.key("Up")
	x.waitFor(5*time.Second, "(•) lon1")
	x.snap("cloud-region")
	x.key("Enter")

	x.waitFor(30*time.Second, "5/10 Setting up the agent", "The DigitalOcean backend is ready", "The agent is registered", "registered agent")
	x.snap("progress")
	x.key("Enter")
	x.waitFor(30*time.Second, "9/10 Service", "Installing the service · done")
	x.key("Enter")
	x.waitFor(10*time.Second, "10/10 Done", "dc-agent is set up", "DigitalOcean, default region lon1", "eu-cloud ("+pool.PoolID+", europe)")
	x.snap("summary")
	x.key("q")
	x.waitExit(exitFile, 0)

	for _, shot := range mustGlob(t, filepath.Join(x.artifacts, "*.txt")) {
		b, _ := os.ReadFile(shot)
		if s := string(b); strings.Contains(s, do.Token()) || strings.Contains(s, tok) || strings.Contains(s, "Proxmox host") {
			t.Errorf("%s shows a token or the Proxmox screens:\n%s", shot, b)
		}
	}
	c, err := config.Load(cfg)
	if err != nil {
		t.Fatal(err)
	}
	d := c.Provisioner.DigitalOcean
	if c.Provisioner.Type != config.TypeDigitalOcean || d == nil || d.DefaultRegion != "lon1" || d.Endpoint != doURL || c.API.PoolID != pool.PoolID || c.API.ProviderPubkey != prov.Pubkey {
		t.Fatalf("config: %+v %+v", c.API, d)
	}
	if got, err := setup.ReadCloudToken(d.APITokenFile); err != nil || got != do.Token() || d.APITokenFile == good {
		t.Fatalf("kept token file %s: %v", d.APITokenFile, err)
	}
	key, err := c.LoadAgentKey()
	if err != nil {
		t.Fatal(err)
	}
	if reg := srv.Delegation(prov, identity.PublicHex(key)); reg == nil || reg.PoolID == nil || *reg.PoolID != pool.PoolID {
		t.Fatalf("the API holds %+v", reg)
	}
	if _, err := os.Stat(filepath.Join(dir, "root/etc/systemd/system/dc-agent.service")); err != nil {
		t.Fatal(err)
	}
}
