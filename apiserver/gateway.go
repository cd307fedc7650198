package apiserver

import (
	"context"
	"net/http"

	"github.com/decent-stuff/dc-agent/apiserver/store"
	"github.com/decent-stuff/dc-agent/dcapi"
)

// The gateway endpoints (api/src/openapi/agents.rs manage_gateway_dns and
// register_gateway), both profiles. The DNS zone is a table (`dc-api dns
// list` shows it) where the live server writes to Cloudflare; names are
// gateway_fqdn's <slug>.<dc_id>.<gw_prefix>.<domain> (api/src/cloudflare_dns.rs).
//
// The live server requires the dns_manage permission, which setup-token
// delegations carry. A delegation of the default profile cannot hold it
// (identity.AllPermissions), so there the endpoints need provision: the
// gateway is part of provisioning.

// permDNSManage is the live AgentPermission::DnsManage.
const permDNSManage = "dns_manage"

// Defaults of the zone's names: CF_DOMAIN and CF_GW_PREFIX of the live server.
const (
	DefaultGatewayDomain = "decent-cloud.org"
	DefaultGatewayPrefix = "gw"
)

func (s *Server) gatewayFQDN(slug, dcID string) string {
	return slug + "." + dcID + "." + s.cfg.GatewayPrefix + "." + s.cfg.GatewayDomain
}

func (s *Server) gatewayDNS(w http.ResponseWriter, r *http.Request, c *caller) error {
	var req dcapi.GatewayDNSRequest
	if err := s.decode(r, c.body, schemaGatewayDNS, &req); err != nil {
		return err
	}
	if s.live {
		if err := livePerm(c, permDNSManage); err != nil {
			return err
		}
	}
	if err := s.st.GatewayDNS(r.Context(), c.provider, req, s.gatewayFQDN(req.Slug, req.DCID), c.nowNs); err != nil {
		return err
	}
	fqdn := s.gatewayFQDN(req.Slug, req.DCID)
	s.log.InfoContext(r.Context(), "gateway DNS "+req.Action, "request_id", requestID(r.Context()), "name", fqdn, "agent", short(c.key))
	writeJSON(w, http.StatusOK, dcapi.GatewayDNSResponse{Subdomain: fqdn})
	return nil
}

func (s *Server) gatewayRegister(w http.ResponseWriter, r *http.Request, c *caller) error {
	var req dcapi.GatewayRegisterRequest
	if err := s.decode(r, c.body, schemaGatewayRegister, &req); err != nil {
		return err
	}
	if s.live {
		if err := livePerm(c, permDNSManage); err != nil {
			return err
		}
	}
	if err := store.CheckDCID(req.DCID); err != nil {
		return errorf(http.StatusUnprocessableEntity, "Invalid dc_id: %v", err)
	}
	if s.cfg.PublicURL == "" {
		// The live server's answer without API_PUBLIC_URL.
		return errorf(http.StatusServiceUnavailable, "API_PUBLIC_URL not set - required for gateway registration")
	}
	reg, err := s.st.RegisterGateway(r.Context(), c.provider, req.DCID, s.cfg.PublicURL, c.nowNs)
	if err != nil {
		return err
	}
	s.log.InfoContext(r.Context(), "gateway registered", "request_id", requestID(r.Context()), "dc_id", req.DCID, "agent", short(c.key))
	writeJSON(w, http.StatusOK, reg)
	return nil
}

// recordBandwidth stores a heartbeat's bandwidthStats. As the live server
// (send_heartbeat), a bad or failed record is logged and does not fail the
// heartbeat.
func (s *Server) recordBandwidth(ctx context.Context, c *caller, stats []dcapi.VMBandwidthReport) {
	if err := s.st.RecordBandwidth(ctx, c.provider, stats, c.nowNs); err != nil {
		s.log.WarnContext(ctx, "bandwidth stats not recorded", "request_id", requestID(ctx), "agent", short(c.key), "err", err)
	}
}

func gatewayRoutes(m *http.ServeMux, s *Server, wrap func(h authedHandler) http.HandlerFunc) {
	p := dcapi.APIPrefix
	m.HandleFunc("POST "+p+dcapi.PathGatewayDNS, wrap(s.gatewayDNS))
	m.HandleFunc("POST "+p+dcapi.PathGatewayRegister, wrap(s.gatewayRegister))
}
