package gateway

import (
	"errors"
	"fmt"
	"strings"

	"github.com/decent-stuff/dc-agent/config"
	"github.com/decent-stuff/dc-agent/dcapi"
)

// CaddyTLS is how the wildcard site gets its certificate.
type CaddyTLS int

const (
	// TLSAcmeDNS is the live setup: a per-provider wildcard certificate by
	// DNS-01 through the API's acme-dns (credentials from RegisterGateway,
	// in Caddy's environment; needs a Caddy built with caddy-dns/acmedns).
	TLSAcmeDNS CaddyTLS = iota
	// TLSInternal is Caddy's own CA (tls internal): for tests and hosts
	// whose tenants accept a private CA.
	TLSInternal
)

// Caddyfile is the main Caddy config of a gateway host, as the Rust
// agent's setup writes it (dc-agent/src/setup/gateway.rs): the admin
// endpoint, certificate storage, and the wildcard site *.<zone> importing
// one handle block per VM from caddy_sites_dir.
func Caddyfile(cfg config.GatewayConfig, tls CaddyTLS, storageDir string) []byte {
	cfg.ApplyDefaults()
	var b strings.Builder
	b.WriteString("# Caddy configuration of a Decent Cloud gateway, written by dc-agent.\n")
	b.WriteString("# Per-VM routes: " + cfg.CaddySitesDir + "/<slug>.caddy (the agent keeps them).\n\n")
	b.WriteString("{\n")
	fmt.Fprintf(&b, "\tadmin %s\n", cfg.CaddyAdmin)
	fmt.Fprintf(&b, "\tstorage file_system {\n\t\troot %s\n\t}\n", storageDir)
	if tls == TLSInternal {
		b.WriteString("\tskip_install_trust\n")
	}
	b.WriteString("}\n\n")
	fmt.Fprintf(&b, "*.%s {\n", cfg.Zone())
	switch tls {
	case TLSInternal:
		b.WriteString("\ttls internal\n")
	default:
		b.WriteString("\ttls {\n\t\tdns acmedns {\n" +
			"\t\t\tserver_url {$ACME_DNS_SERVER_URL}\n" +
			"\t\t\tusername {$ACME_DNS_USERNAME}\n" +
			"\t\t\tpassword {$ACME_DNS_PASSWORD}\n" +
			"\t\t\tsubdomain {$ACME_DNS_SUBDOMAIN}\n" +
			"\t\t}\n\t}\n")
	}
	fmt.Fprintf(&b, "\timport %s/*.caddy\n", cfg.CaddySitesDir)
	b.WriteString("}\n")
	return []byte(b.String())
}

// CaddyEnv is Caddy's environment file for TLSAcmeDNS (EnvironmentFile= of
// its unit). It holds a password: write it 0600, owned by Caddy's user.
func CaddyEnv(r dcapi.GatewayRegistration) ([]byte, error) {
	vals := [][2]string{
		{"ACME_DNS_SERVER_URL", r.AcmeDNSServerURL}, {"ACME_DNS_USERNAME", r.AcmeDNSUsername},
		{"ACME_DNS_PASSWORD", r.AcmeDNSPassword}, {"ACME_DNS_SUBDOMAIN", r.AcmeDNSSubdomain},
	}
	var b strings.Builder
	for _, kv := range vals {
		if kv[1] == "" || strings.ContainsFunc(kv[1], func(c rune) bool { return c < 0x21 || c == 0x7f || c == '"' || c == '\\' || c == '\'' || c == '$' }) {
			return nil, errors.New("the API's gateway registration has an empty or unusable " + kv[0])
		}
		b.WriteString(kv[0] + "=" + kv[1] + "\n")
	}
	return []byte(b.String()), nil
}
