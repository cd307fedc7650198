package gateway

import (
	"context"
	"fmt"
	"strings"

	"github.com/decent-stuff/dc-agent/dcapi"
)

// DNS makes and removes the VMs' A records <slug>.<dc_id>.<gw_prefix>.<domain>.
// The agent backs it with the Decent Cloud API (APIDNS); the live server
// holds the zone, agents never hold DNS credentials.
//
// DeleteRecord of a name that does not exist must succeed (the live server's
// does). CreateRecord of a name that exists may fail (the live server's
// does, Cloudflare refuses a duplicate): the gateway deletes first whenever
// an earlier create may have happened.
type DNS interface {
	CreateRecord(ctx context.Context, slug, dcID, publicIP string) (subdomain string, err error)
	DeleteRecord(ctx context.Context, slug, dcID string) error
}

// Registrar claims a dc_id for the provider and returns the acme-dns
// credentials of its wildcard certificate (POST /api/v1/agents/gateway/register).
// *dcapi.Client is one; setup calls it once per gateway host.
type Registrar interface {
	RegisterGateway(ctx context.Context, dcID string) (dcapi.GatewayRegistration, error)
}

var _ Registrar = (*dcapi.Client)(nil)

// APIDNS is DNS through the Decent Cloud API (POST /api/v1/agents/dns).
type APIDNS struct{ Client *dcapi.Client }

// CreateRecord asks the API for the record and returns the name it made.
func (a APIDNS) CreateRecord(ctx context.Context, slug, dcID, publicIP string) (string, error) {
	r, err := a.Client.GatewayDNS(ctx, dcapi.GatewayDNSRequest{Action: dcapi.GatewayDNSCreate, Slug: slug, DCID: dcID, PublicIP: publicIP})
	if err != nil {
		return "", err
	}
	return r.Subdomain, nil
}

// DeleteRecord asks the API to remove the record.
func (a APIDNS) DeleteRecord(ctx context.Context, slug, dcID string) error {
	_, err := a.Client.GatewayDNS(ctx, dcapi.GatewayDNSRequest{Action: dcapi.GatewayDNSDelete, Slug: slug, DCID: dcID})
	return err
}

// CheckSubdomain checks the name the API answered for slug: a DNS name
// inside zone (<dc_id>.<gw_prefix>.<domain>), so Caddy's wildcard site
// *.<zone> serves it. The API builds it from its own prefix and domain
// (CF_GW_PREFIX: "gw" in production, "dev-gw" on the dev server); a
// gateway configured for another one would route nothing.
func CheckSubdomain(name, slug, zone string) error {
	if err := checkHostname(name); err != nil {
		return fmt.Errorf("the API answered the VM name %q: %v", truncate(name, 300), err)
	}
	if name == slug+"."+zone {
		return nil
	}
	dcID, _, _ := strings.Cut(zone, ".")
	if api, ok := strings.CutPrefix(name, slug+"."+dcID+"."); ok {
		prefix, domain, _ := strings.Cut(api, ".")
		return fmt.Errorf("the API made the VM name %s, but this gateway serves *.%s: set [gateway] gw_prefix = %q and domain = %q (the API's), and the Caddyfile's site to *.%s.%s", name, zone, prefix, domain, dcID, api)
	}
	return fmt.Errorf("the API answered the VM name %s for slug %s, not a name under %s", name, slug, zone)
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}
