package dcapi

import (
	"context"
	"fmt"
	"net/http"
)

// Gateway endpoints of the live API (api/src/openapi/agents.rs). Both need
// the agent's dns_manage permission (setup-token delegations carry it);
// errors are HTTP 200 {"success":false,"error":…} like every handler there.
const (
	PathGatewayDNS      = "/agents/dns"
	PathGatewayRegister = "/agents/gateway/register"
)

// GatewayDNS creates or deletes the A record <slug>.<dc_id>.<gw_prefix>.<domain>
// and returns that name. The live server refuses a create when dc_id is not
// registered to the provider ("dc_id '…' is not registered to this
// provider": run RegisterGateway first). Its delete succeeds when there is
// no such record; its create of a record that exists fails (Cloudflare
// refuses a duplicate), so a caller that may have created it before deletes
// first.
func (c *Client) GatewayDNS(ctx context.Context, req GatewayDNSRequest) (GatewayDNSResponse, error) {
	var out GatewayDNSResponse
	switch req.Action {
	case GatewayDNSCreate:
		if req.PublicIP == "" {
			return out, fmt.Errorf("gateway DNS create for %s needs the public IP", req.Slug)
		}
	case GatewayDNSDelete:
		req.PublicIP = ""
	default:
		return out, fmt.Errorf("gateway DNS action %q is not create or delete", req.Action)
	}
	_, err := c.Do(ctx, http.MethodPost, PathGatewayDNS, nil, req, &out, 0)
	return out, err
}

// RegisterGateway claims dc_id for the provider and returns fresh acme-dns
// credentials for the wildcard certificate (the previous password stops
// working). Another provider's dc_id is refused ("dc_id '…' is already
// registered to a different provider").
func (c *Client) RegisterGateway(ctx context.Context, dcID string) (GatewayRegistration, error) {
	var out GatewayRegistration
	_, err := c.Do(ctx, http.MethodPost, PathGatewayRegister, nil, GatewayRegisterRequest{DCID: dcID}, &out, 0)
	return out, err
}
