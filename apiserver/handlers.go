package apiserver

import (
	"bytes"
	"context"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/decent-stuff/dc-agent/apiserver/store"
	"github.com/decent-stuff/dc-agent/dcapi"
	"github.com/decent-stuff/dc-agent/identity"
)

func (s *Server) routes() {
	if s.live {
		s.mux = s.liveRoutes()
		return
	}
	m := http.NewServeMux()
	p := dcapi.APIPrefix
	agent := func(perm string) endpoint { return endpoint{access: agentOnly, perm: perm} }

	m.HandleFunc("GET /{$}", s.dashboard)
	m.HandleFunc("GET /healthz", s.healthz)

	m.HandleFunc("GET "+p+"/providers/{pubkey}/contracts/pending-provision", s.signed(agent(identity.PermFetchContracts), s.pendingProvision))
	m.HandleFunc("POST "+p+"/providers/{pubkey}/contracts/{cid}/lock", s.signed(agent(identity.PermProvision), s.lock))
	m.HandleFunc("DELETE "+p+"/providers/{pubkey}/contracts/{cid}/lock", s.signed(agent(identity.PermProvision), s.unlock))
	m.HandleFunc("PUT "+p+"/provider/rental-requests/{cid}/provisioning",
		s.signed(endpoint{access: agentOnly, perm: identity.PermProvision, source: fromContract}, s.provisioning))
	m.HandleFunc("POST "+p+"/providers/{pubkey}/heartbeat", s.signed(agent(identity.PermHeartbeat), s.heartbeat))
	m.HandleFunc("POST "+p+"/contracts/{cid}/health",
		s.signed(endpoint{access: agentOnly, perm: identity.PermHealthCheck, source: fromContract}, s.health))
	m.HandleFunc("POST "+p+"/providers/{pubkey}/health", s.signed(agent(identity.PermHealthCheck), s.healthBatch))
	m.HandleFunc("GET "+p+"/providers/{pubkey}/contracts/active", s.signed(agent(identity.PermFetchContracts), s.activeContracts))
	m.HandleFunc("POST "+p+"/providers/{pubkey}/reconcile", s.signed(agent(identity.PermProvision), s.reconcile))
	m.HandleFunc("PUT "+p+"/providers/{pubkey}/contracts/{cid}/terminated", s.signed(agent(identity.PermProvision), s.terminated))

	m.HandleFunc("POST "+p+"/providers/{pubkey}/agent-delegations", s.signed(endpoint{access: registration}, s.createDelegation))
	m.HandleFunc("GET "+p+"/providers/{pubkey}/agent-delegations", s.signed(endpoint{access: providerOnly}, s.listDelegations))
	m.HandleFunc("GET "+p+"/providers/{pubkey}/agent-delegations/{agentPubkey}", s.signed(endpoint{access: providerOrSelf}, s.getDelegation))
	m.HandleFunc("DELETE "+p+"/providers/{pubkey}/agent-delegations/{agentPubkey}", s.signed(endpoint{access: providerOnly}, s.revokeDelegation))

	poolRoutes(m, func(h authedHandler) http.HandlerFunc { return s.signed(endpoint{access: providerOnly}, h) }, s)
	tenantRoutes(m, s)
	gatewayRoutes(m, s, func(h authedHandler) http.HandlerFunc {
		return s.signed(endpoint{access: agentOnly, perm: identity.PermProvision, source: fromAgent}, h)
	})

	m.HandleFunc("GET "+p+"/providers/{pubkey}/agent-status", s.public(s.agentStatus))
	m.HandleFunc("GET "+p+"/providers/{pubkey}/health-summary", s.public(s.healthSummary))
	s.mux = m
}

// public wraps an unauthenticated endpoint that names a provider.
func (s *Server) public(h func(w http.ResponseWriter, r *http.Request, provider string) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		p, err := pathKey(r, "pubkey", "provider key")
		if err == nil {
			err = h(w, r, p)
		}
		if err != nil {
			s.writeError(w, r, err)
		}
	}
}

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	if err := s.st.DB().PingContext(r.Context()); err != nil {
		s.writeError(w, r, errorf(http.StatusServiceUnavailable, "database unavailable"))
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok", "version": s.cfg.Version})
}

// pendingProvision answers with the offerable contracts; with ?waitSeconds=N
// and nothing to offer it waits up to N s (≤ 30) for a new contract, a
// released lock or an ending cool-down, whichever comes first.
func (s *Server) pendingProvision(w http.ResponseWriter, r *http.Request, c *caller) error {
	var wait time.Duration
	q := r.URL.Query()
	longPoll := q.Has("waitSeconds")
	if longPoll {
		n, err := strconv.Atoi(q.Get("waitSeconds"))
		if err != nil || n < 0 {
			return errorf(http.StatusBadRequest, "waitSeconds must be a whole number of seconds 0..%d", dcapi.MaxWaitSeconds)
		}
		wait = time.Duration(min(n, dcapi.MaxWaitSeconds)) * time.Second
		w.Header().Set(dcapi.HeaderLongPoll, strconv.Itoa(int(wait/time.Second)))
	}
	var pool *store.Pool
	if c.deleg.PoolID != nil {
		// An agent registered by setup token sees its pool's contracts
		// (as live); one registered by an offline-signed delegation, all.
		var err error
		if pool, err = s.st.GetPool(r.Context(), *c.deleg.PoolID); err != nil {
			return err
		}
	}
	deadline := time.Now().Add(wait)
	drain := drainCh(r.Context())
	for {
		woken, done := s.hub.subscribe(c.provider)
		list, nextNs, err := s.st.PendingContractsForPool(r.Context(), c.provider, c.key, pool, s.now().UnixNano())
		if err != nil {
			done()
			return err
		}
		left := time.Until(deadline)
		if len(list) > 0 || left <= 0 {
			done()
			writeJSON(w, http.StatusOK, list)
			return nil
		}
		if nextNs > 0 {
			// Wake when a cool-down ends or a lock expires (a little after,
			// so the re-query sees it).
			left = min(left, time.Duration(nextNs-s.now().UnixNano())+time.Millisecond)
		}
		t := time.NewTimer(max(left, time.Millisecond))
		select {
		case <-woken:
		case <-t.C:
		case <-drain:
			deadline = time.Now()
		case <-r.Context().Done():
			t.Stop()
			done()
			return r.Context().Err()
		}
		t.Stop()
		done()
	}
}

func (s *Server) lock(w http.ResponseWriter, r *http.Request, c *caller) error {
	cid, err := contractParam(r)
	if err != nil {
		return err
	}
	res, err := s.st.LockContract(r.Context(), c.provider, cid, c.key, c.nowNs)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, res)
	return nil
}

func (s *Server) unlock(w http.ResponseWriter, r *http.Request, c *caller) error {
	cid, err := contractParam(r)
	if err != nil {
		return err
	}
	if err := s.st.UnlockContract(r.Context(), c.provider, cid, c.key, c.nowNs); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, true)
	return nil
}

func (s *Server) provisioning(w http.ResponseWriter, r *http.Request, c *caller) error {
	var u dcapi.ProvisioningUpdate
	if err := decodeBody(c.body, &u); err != nil {
		return err
	}
	cid := r.PathValue("cid")
	res, err := s.st.UpdateProvisioning(r.Context(), c.provider, cid, c.key, u, c.nowNs)
	if err != nil {
		return err
	}
	if !res.Unchanged {
		s.log.InfoContext(r.Context(), "contract status", "request_id", requestID(r.Context()), "contract", cid, "status", res.Status, "agent", short(c.key))
		if res.Status == dcapi.StatusProvisioningFailed {
			s.hub.notify(c.provider) // the retry time may have changed
		}
	}
	msg := "contract " + cid + " is " + res.Status
	if res.Unchanged {
		msg += " (unchanged)"
	}
	writeJSON(w, http.StatusOK, msg)
	return nil
}

func (s *Server) heartbeat(w http.ResponseWriter, r *http.Request, c *caller) error {
	var hb dcapi.Heartbeat
	// The same body as this agent's last heartbeat decodes the same: an
	// agent repeats its body until something changes. (The store checks
	// the values every time.)
	if m := c.ck.lastHB.Load(); m != nil && bytes.Equal(m.body, c.body) {
		hb = m.hb
	} else {
		if err := decodeBody(c.body, &hb); err != nil {
			return err
		}
		if len(c.body) <= maxMemoBody {
			c.ck.lastHB.Store(&hbMemo{body: bytes.Clone(c.body), hb: hb})
		}
	}
	if err := s.st.RecordHeartbeat(r.Context(), c.provider, c.key, hb, c.nowNs); err != nil {
		return err
	}
	s.recordBandwidth(r.Context(), c, hb.BandwidthStats)
	if c.deleg.PoolID != nil {
		writeJSON(w, http.StatusOK, s.heartbeatAck(r.Context(), c))
		return nil
	}
	writeEncoded(w, http.StatusOK, s.hbAck)
	return nil
}

// heartbeatAck answers a heartbeat: for an agent in a pool with the pool's
// id and name (live's send_heartbeat, api/src/openapi/agents.rs).
func (s *Server) heartbeatAck(ctx context.Context, c *caller) dcapi.HeartbeatResponse {
	ack := dcapi.HeartbeatResponse{Acknowledged: true, NextHeartbeatSeconds: s.cfg.NextHeartbeatSeconds}
	if id := c.deleg.PoolID; id != nil {
		ack.PoolID = id
		if p, err := s.st.GetPool(ctx, *id); err == nil {
			ack.PoolName = &p.Name
		}
	}
	return ack
}

func (s *Server) health(w http.ResponseWriter, r *http.Request, c *caller) error {
	var h dcapi.HealthCheck
	if err := decodeBody(c.body, &h); err != nil {
		return err
	}
	cid := r.PathValue("cid")
	if h.ContractID != "" && h.ContractID != cid {
		return errorf(http.StatusUnprocessableEntity, "contractId %q in the body differs from the contract in the path", clip(h.ContractID))
	}
	h.ContractID = cid
	recs, err := s.st.InsertHealthChecks(r.Context(), c.provider, c.key, []dcapi.HealthCheck{h}, c.nowNs)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, recs[0])
	return nil
}

func (s *Server) healthBatch(w http.ResponseWriter, r *http.Request, c *caller) error {
	var b dcapi.HealthBatch
	if err := decodeBody(c.body, &b); err != nil {
		return err
	}
	if b.Checks == nil {
		return errorf(http.StatusUnprocessableEntity, `body must be {"checks":[…]}`)
	}
	if len(b.Checks) > dcapi.MaxHealthBatch {
		return errorf(http.StatusUnprocessableEntity, "%d checks in one batch; at most %d", len(b.Checks), dcapi.MaxHealthBatch)
	}
	if _, err := s.st.InsertHealthChecks(r.Context(), c.provider, c.key, b.Checks, c.nowNs); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, dcapi.HealthBatchResult{Accepted: len(b.Checks)})
	return nil
}

func (s *Server) activeContracts(w http.ResponseWriter, r *http.Request, c *caller) error {
	list, err := s.st.ActiveContracts(r.Context(), c.provider, c.nowNs)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, list)
	return nil
}

func (s *Server) reconcile(w http.ResponseWriter, r *http.Request, c *caller) error {
	var req dcapi.ReconcileRequest
	if err := decodeBody(c.body, &req); err != nil {
		return err
	}
	if req.RunningInstances == nil {
		return errorf(http.StatusUnprocessableEntity, `body must be {"runningInstances":[…]} (an empty array when nothing runs)`)
	}
	res, err := s.st.Reconcile(r.Context(), c.provider, req.RunningInstances, c.nowNs)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, res)
	return nil
}

func (s *Server) terminated(w http.ResponseWriter, r *http.Request, c *caller) error {
	cid, err := contractParam(r)
	if err != nil {
		return err
	}
	if err := s.st.MarkTerminated(r.Context(), c.provider, cid, c.nowNs); err != nil {
		return err
	}
	s.log.InfoContext(r.Context(), "instance terminated", "request_id", requestID(r.Context()), "contract", cid, "agent", short(c.key))
	writeJSON(w, http.StatusOK, true)
	return nil
}

func (s *Server) createDelegation(w http.ResponseWriter, r *http.Request, c *caller) error {
	var req dcapi.CreateDelegationRequest
	if err := decodeBody(c.body, &req); err != nil {
		return err
	}
	agent := strings.ToLower(req.AgentPubkey)
	if !isHex64(agent) {
		return errorf(http.StatusUnprocessableEntity, "agentPubkey must be 64 hex characters, got %q", clip(req.AgentPubkey))
	}
	if c.agent && agent != c.key {
		return errorf(http.StatusForbidden, "an agent key may only register a delegation of itself (body names agent %s, request signed by %s)", short(agent), short(c.key))
	}
	perms := slices.Clone(req.Permissions)
	slices.Sort(perms)
	perms = slices.Compact(perms)
	d := identity.Delegation{AgentPubkey: agent, ProviderPubkey: c.provider, Permissions: perms, ExpiresAtNs: req.ExpiresAtNs, IssuedAtNs: req.IssuedAtNs}
	if req.Label != nil {
		d.Label = *req.Label
	}
	if err := d.Validate(); err != nil {
		return errorf(http.StatusUnprocessableEntity, "delegation: %v", err)
	}
	sig, err := identity.ParseSignatureHex(strings.ToLower(req.Signature))
	if err != nil {
		return errorf(http.StatusUnprocessableEntity, "delegation signature: %v", err)
	}
	sd := identity.SignedDelegation{Delegation: d, Signature: sig}
	if err := sd.Verify(); err != nil {
		return errorf(http.StatusUnprocessableEntity, "delegation %v (it must be signed by provider %s over the canonical text of PROTOCOL.md §3)", err, short(c.provider))
	}
	if c.agent {
		// The provider vouches for this key: now its nonce is worth
		// remembering (signed has not, for an agent's registration).
		if err := s.spendNonce(r.Context(), c); err != nil {
			return err
		}
	}
	stored, created, err := s.st.PutDelegation(r.Context(), sd, c.agent, c.nowNs)
	if err != nil {
		return err
	}
	s.log.InfoContext(r.Context(), "delegation stored", "request_id", requestID(r.Context()), "provider", short(c.provider), "agent", short(agent),
		"permissions", strings.Join(perms, ","), "created", created, "by_agent", c.agent)
	status := http.StatusOK
	if created {
		status = http.StatusCreated
	}
	writeJSON(w, status, dcapi.DelegationInfo{
		AgentPubkey: stored.AgentPubkey, ProviderPubkey: stored.ProviderPubkey, Permissions: stored.Permissions,
		ExpiresAtNs: stored.ExpiresAtNs, Label: stored.Label, CreatedAtNs: stored.CreatedAtNs, Active: true,
		IssuedAtNs: stored.IssuedAtNs, PoolID: stored.PoolID,
	})
	return nil
}

func (s *Server) listDelegations(w http.ResponseWriter, r *http.Request, c *caller) error {
	list, err := s.st.ListDelegations(r.Context(), c.provider, c.nowNs)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, list)
	return nil
}

// getDelegation (extension) lets the provider, or the agent itself, read one
// delegation, revoked or not: `dc-agent doctor` checks what is registered.
func (s *Server) getDelegation(w http.ResponseWriter, r *http.Request, c *caller) error {
	agent, err := pathKey(r, "agentPubkey", "agent key")
	if err != nil {
		return err
	}
	list, err := s.st.ListDelegations(r.Context(), c.provider, c.nowNs)
	if err != nil {
		return err
	}
	for _, d := range list {
		if d.AgentPubkey == agent {
			writeJSON(w, http.StatusOK, d)
			return nil
		}
	}
	return errorf(http.StatusNotFound, "no delegation for agent key %s from provider %s", short(agent), short(c.provider))
}

func (s *Server) revokeDelegation(w http.ResponseWriter, r *http.Request, c *caller) error {
	agent, err := pathKey(r, "agentPubkey", "agent key")
	if err != nil {
		return err
	}
	if err := s.st.RevokeDelegation(r.Context(), c.provider, agent, c.nowNs); err != nil {
		return err
	}
	s.log.InfoContext(r.Context(), "delegation revoked", "request_id", requestID(r.Context()), "provider", short(c.provider), "agent", short(agent))
	writeJSON(w, http.StatusOK, true)
	return nil
}

func (s *Server) agentStatus(w http.ResponseWriter, r *http.Request, provider string) error {
	st, err := s.st.AgentStatus(r.Context(), provider, s.now().UnixNano())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, st)
	return nil
}

func (s *Server) healthSummary(w http.ResponseWriter, r *http.Request, provider string) error {
	days := 30
	if v := r.URL.Query().Get("days"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > store.MaxSummaryDays {
			return errorf(http.StatusBadRequest, "days must be a whole number 1..%d, got %q", store.MaxSummaryDays, clip(v))
		}
		days = n
	}
	sum, err := s.st.HealthSummary(r.Context(), provider, days, s.now().UnixNano())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, sum)
	return nil
}

func contractParam(r *http.Request) (string, error) {
	cid := r.PathValue("cid")
	if !isHex64(cid) {
		return "", errorf(http.StatusBadRequest, "contract id in the path must be 64 lowercase hex characters, got %q", clip(cid))
	}
	return cid, nil
}

func fmtNs(ns int64) string { return time.Unix(0, ns).UTC().Format(time.RFC3339) }
