package e2eutil

import (
	"context"
	"crypto/ed25519"
	"testing"
	"time"

	"github.com/decent-stuff/dc-agent/apiserver"
	"github.com/decent-stuff/dc-agent/apiserver/apitest"
	"github.com/decent-stuff/dc-agent/apiserver/store"
	"github.com/decent-stuff/dc-agent/dcapi"
	"github.com/decent-stuff/dc-agent/identity"
)

// Profile is a dc-api profile the end-to-end tests run against: the
// reference server with its extensions (default), or the live Decent Cloud
// API's behaviour (live: setup-token registration and pools, no long-poll,
// no contracts/active, per-contract health only, a refused repeated
// "provisioning", plaintext passwords encrypted by the server,
// permission errors as HTTP 200).
type Profile struct {
	Name string
	Live bool
}

// Profiles are both dc-api profiles, for table-driven tests.
var Profiles = []Profile{{Name: apiserver.ProfileDefault}, {Name: apiserver.ProfileLive, Live: true}}

// Options are the apitest options that select the profile.
func (p Profile) Options() []apitest.Option {
	return []apitest.Option{apitest.WithProfile(p.Name)}
}

// Account is a provider with one agent registered as the profile's server
// registers agents: a delegation signed by the provider (default), or a
// pool and a one-time setup token redeemed over HTTP, unsigned, with
// dcapi.SetupAgent as `dc-agent register --setup-token` does (live: POST /api/v1/agents/setup,
// api/src/openapi/agents.rs).
type Account struct {
	Provider *apitest.Provider
	AgentKey ed25519.PrivateKey
	// Pool is the agent's pool (live), nil for a delegated agent.
	Pool *store.Pool
	// Setup is what POST /agents/setup answered (live).
	Setup *dcapi.AgentSetupResponse
}

// Enroll registers a provider and an agent of provisionerType with srv
// the way profile p does it.
func (p Profile) Enroll(t testing.TB, srv *apitest.Server, provisionerType string) *Account {
	t.Helper()
	prov := srv.NewProvider("E2E Hosting")
	if !p.Live {
		return &Account{Provider: prov, AgentKey: srv.NewAgent(prov)}
	}
	pool := srv.NewPool(prov, "e2e", "europe", provisionerType)
	key, err := identity.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	res, err := dcapi.SetupAgent(context.Background(), srv.URL, dcapi.AgentSetupRequest{Token: srv.SetupToken(pool, time.Hour), AgentPubkey: identity.PublicHex(key)})
	if err != nil {
		t.Fatal(err)
	}
	if res.ProviderPubkey != prov.Pubkey || res.PoolID != pool.PoolID {
		t.Fatalf("setup answered %+v for provider %s pool %s", res, prov.Pubkey, pool.PoolID)
	}
	return &Account{Provider: prov, AgentKey: key, Pool: pool, Setup: &res}
}

// CreateContract creates a contract of the account's provider that its
// agent is offered (in its pool, when it has one).
func (a *Account) CreateContract(srv *apitest.Server, spec apitest.ContractSpec) string {
	if a.Pool != nil && spec.AgentPoolID == nil {
		spec.AgentPoolID = apitest.Ptr(a.Pool.PoolID)
	}
	return srv.CreateContract(a.Provider, spec)
}
