package apiserver

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/decent-stuff/dc-agent/apiserver/store"
	"github.com/decent-stuff/dc-agent/dcapi"
	"github.com/decent-stuff/dc-agent/identity"
)

// Agent pools, setup tokens and registration by setup token, in both
// profiles, as the live API has them (api/src/openapi/pools.rs,
// api/src/openapi/agents.rs setup_agent). The default profile answers
// refusals with its status codes; the live profile with HTTP 200
// success:false (writeError).

// decode parses a request body into v: in the live profile as
// poem-openapi would (the Content-Type must be JSON, then sch), else
// leniently (decodeBody).
func (s *Server) decode(r *http.Request, body []byte, sch *liveSchema, v any) error {
	if !s.live {
		return decodeBody(body, v)
	}
	ct := r.Header.Get("Content-Type")
	if ct == "" {
		return plainf(http.StatusUnsupportedMediaType, "the client request does not include the `Content-Type` header")
	}
	if mt, _, _ := strings.Cut(ct, ";"); !strings.EqualFold(strings.TrimSpace(mt), "application/json") && !strings.HasSuffix(strings.ToLower(strings.TrimSpace(mt)), "+json") {
		return plainf(http.StatusUnsupportedMediaType, "the `Content-Type` requested by the client is not supported: %s", clip(ct))
	}
	if err := parseLive(body, sch); err != nil {
		return err
	}
	if err := json.Unmarshal(body, v); err != nil {
		// parseLive accepted it: only a value Go cannot hold gets here.
		return payloadError(err.Error())
	}
	return nil
}

// livePubkey is live's decode_pubkey (api/src/openapi/common.rs): hex of
// 32 bytes, any case; the result is lowercase.
func livePubkey(v string) (string, error) {
	b, err := hex.DecodeString(v)
	if err != nil {
		return "", fmt.Errorf("Invalid pubkey hex: %s (value: %s)", store.RustHexError(err), clip(v))
	}
	if len(b) != 32 {
		return "", fmt.Errorf("Public key must be 32 bytes, got %d bytes (value: %s)", len(b), clip(v))
	}
	return hex.EncodeToString(b), nil
}

// setup is POST /agents/setup: an agent registers itself, unsigned, with a
// one-time setup token (setup_agent, api/src/openapi/agents.rs).
func (s *Server) setup(w http.ResponseWriter, r *http.Request) {
	if err := s.doSetup(w, r); err != nil {
		s.writeError(w, r, err)
	}
}

func (s *Server) doSetup(w http.ResponseWriter, r *http.Request) error {
	// Unsigned: under the global limit of unknown keys, with a small body.
	if err := s.admitUnknown(r, s.now()); err != nil {
		return err
	}
	body, err := readBody(r)
	if err != nil {
		return s.bodyReadError(err)
	}
	var req dcapi.AgentSetupRequest
	if err := s.decode(r, body, schemaSetup, &req); err != nil {
		return err
	}
	var agent string
	if s.live {
		if agent, err = livePubkey(req.AgentPubkey); err != nil {
			return errorf(http.StatusUnprocessableEntity, "Invalid agent_pubkey: %v", err)
		}
	} else if agent, err = identity.NormalizePublicKeyHex(req.AgentPubkey); err != nil {
		return errorf(http.StatusUnprocessableEntity, "agentPubkey must be 64 hex characters (the agent's Ed25519 public key), got %q", clip(req.AgentPubkey))
	}
	res, err := s.st.UseSetupToken(r.Context(), req.Token, agent, s.now().UnixNano())
	if err != nil {
		return err
	}
	p := res.Pool
	s.log.InfoContext(r.Context(), "agent registered by setup token", "request_id", requestID(r.Context()),
		"provider", short(p.ProviderPubkey), "agent", short(agent), "pool", p.PoolID)
	writeJSON(w, http.StatusOK, dcapi.AgentSetupResponse{
		ProviderPubkey: p.ProviderPubkey, PoolID: p.PoolID, PoolName: p.Name, PoolLocation: p.Location,
		ProvisionerType: p.ProvisionerType, Permissions: res.Permissions,
	})
	return nil
}

func (s *Server) bodyReadError(err error) error {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		if s.live {
			return plainf(http.StatusRequestEntityTooLarge, "payload too large") // as authenticateLive
		}
		return errorf(http.StatusRequestEntityTooLarge, "request body is larger than %d bytes", mbe.Limit)
	}
	return errorf(http.StatusBadRequest, "reading request body: %v", err)
}

// ownProvider is live's check_authorization for endpoints signed with the
// provider's main key: the key must be the provider in the path. (The
// default profile's authorize has checked it already.)
func (s *Server) ownProvider(r *http.Request, c *caller) error {
	if !s.live {
		return nil
	}
	p, err := livePubkey(r.PathValue("pubkey"))
	if err != nil {
		return errorf(http.StatusBadRequest, "%v", err)
	}
	if p != c.key {
		return errorf(http.StatusUnauthorized, "Unauthorized: request pubkey %s does not match authenticated user %s", p, c.key)
	}
	c.provider = p
	return nil
}

func (s *Server) createPool(w http.ResponseWriter, r *http.Request, c *caller) error {
	var req dcapi.CreatePoolRequest
	if err := s.decode(r, c.body, schemaCreatePool, &req); err != nil {
		return err
	}
	if err := s.ownProvider(r, c); err != nil {
		return err
	}
	p, err := s.st.CreatePool(r.Context(), c.provider, req.Name, req.Location, req.ProvisionerType, c.nowNs)
	if err != nil {
		return err
	}
	s.log.InfoContext(r.Context(), "pool created", "request_id", requestID(r.Context()), "provider", short(c.provider), "pool", p.PoolID)
	writeJSON(w, http.StatusOK, p)
	return nil
}

func (s *Server) listPools(w http.ResponseWriter, r *http.Request, c *caller) error {
	if err := s.ownProvider(r, c); err != nil {
		return err
	}
	list, err := s.st.ListPools(r.Context(), c.provider, c.nowNs)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, list)
	return nil
}

func (s *Server) getPool(w http.ResponseWriter, r *http.Request, c *caller) error {
	if err := s.ownProvider(r, c); err != nil {
		return err
	}
	p, err := s.st.ProviderPool(r.Context(), c.provider, r.PathValue("poolId"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, p)
	return nil
}

func (s *Server) deletePool(w http.ResponseWriter, r *http.Request, c *caller) error {
	if err := s.ownProvider(r, c); err != nil {
		return err
	}
	if err := s.st.DeletePool(r.Context(), c.provider, r.PathValue("poolId")); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, true)
	return nil
}

func (s *Server) createSetupToken(w http.ResponseWriter, r *http.Request, c *caller) error {
	var req dcapi.CreateSetupTokenRequest
	if err := s.decode(r, c.body, schemaCreateToken, &req); err != nil {
		return err
	}
	if err := s.ownProvider(r, c); err != nil {
		return err
	}
	ttl := store.DefaultSetupTokenTTL
	if req.ExpiresInHours != nil {
		ttl = time.Duration(*req.ExpiresInHours) * time.Hour
	}
	tok, err := s.st.CreateSetupToken(r.Context(), c.provider, r.PathValue("poolId"), req.Label, ttl, c.nowNs)
	if err != nil {
		return err
	}
	s.log.InfoContext(r.Context(), "setup token created", "request_id", requestID(r.Context()), "provider", short(c.provider), "pool", tok.PoolID, "token", tok.Hint)
	writeJSON(w, http.StatusOK, tok)
	return nil
}

func (s *Server) listSetupTokens(w http.ResponseWriter, r *http.Request, c *caller) error {
	if err := s.ownProvider(r, c); err != nil {
		return err
	}
	list, err := s.st.ListSetupTokens(r.Context(), c.provider, r.PathValue("poolId"), c.nowNs)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, list)
	return nil
}

func (s *Server) deleteSetupToken(w http.ResponseWriter, r *http.Request, c *caller) error {
	if err := s.ownProvider(r, c); err != nil {
		return err
	}
	if err := s.st.DeleteSetupToken(r.Context(), c.provider, r.PathValue("poolId"), r.PathValue("token")); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, true)
	return nil
}

// poolRoutes registers the pool and setup-token endpoints, signed with the
// provider's main key, through wrap (the profile's authentication).
func poolRoutes(m *http.ServeMux, wrap func(authedHandler) http.HandlerFunc, s *Server) {
	p := dcapi.APIPrefix + "/providers/{pubkey}/pools"
	m.HandleFunc("POST "+p, wrap(s.createPool))
	m.HandleFunc("GET "+p, wrap(s.listPools))
	m.HandleFunc("GET "+p+"/{poolId}", wrap(s.getPool))
	m.HandleFunc("DELETE "+p+"/{poolId}", wrap(s.deletePool))
	m.HandleFunc("POST "+p+"/{poolId}/setup-tokens", wrap(s.createSetupToken))
	m.HandleFunc("GET "+p+"/{poolId}/setup-tokens", wrap(s.listSetupTokens))
	m.HandleFunc("DELETE "+p+"/{poolId}/setup-tokens/{token}", wrap(s.deleteSetupToken))
	m.HandleFunc("POST "+dcapi.APIPrefix+"/agents/setup", s.setup)
}
