package apiserver

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"strings"

	"github.com/decent-stuff/dc-agent/apiserver/store"
	"github.com/decent-stuff/dc-agent/dcapi"
	"github.com/decent-stuff/dc-agent/identity"
)

// The live profile (dc-api serve --profile live): the routes of the live
// Decent Cloud API that an agent uses, with its rules. Each handler names
// the live source it follows; routes the live server lacks
// (POST …/agent-delegations, GET …/contracts/active, the batch health
// endpoint, …/health-summary, our GET of one delegation) are 404 or 405.

func (s *Server) liveRoutes() *http.ServeMux {
	m := http.NewServeMux()
	p := dcapi.APIPrefix
	agent := func(h authedHandler) http.HandlerFunc { return s.signedLive(liveAgent, h) }
	provider := func(h authedHandler) http.HandlerFunc { return s.signedLive(liveProvider, h) }

	m.HandleFunc("GET /{$}", s.dashboard)
	m.HandleFunc("GET /healthz", s.healthz)

	// api/src/openapi/providers.rs
	m.HandleFunc("GET "+p+"/providers/{pubkey}/contracts/pending-provision", agent(s.livePending))
	m.HandleFunc("PUT "+p+"/provider/rental-requests/{cid}/provisioning", s.signedLive(liveEither, s.liveProvisioning))
	m.HandleFunc("POST "+p+"/providers/{pubkey}/reconcile", agent(s.liveReconcile))
	m.HandleFunc("PUT "+p+"/providers/{pubkey}/contracts/{cid}/terminated", agent(s.liveTerminated))
	// api/src/openapi/pools.rs
	m.HandleFunc("POST "+p+"/providers/{pubkey}/contracts/{cid}/lock", agent(s.liveLock))
	m.HandleFunc("DELETE "+p+"/providers/{pubkey}/contracts/{cid}/lock", agent(s.liveUnlock))
	poolRoutes(m, provider, s)
	tenantRoutes(m, s) // pending-password-reset, …/password, the event stream (tenant.go)
	// api/src/openapi/agents.rs
	m.HandleFunc("POST "+p+"/providers/{pubkey}/heartbeat", agent(s.liveHeartbeat))
	m.HandleFunc("POST "+p+"/contracts/{cid}/health", agent(s.liveHealth))
	m.HandleFunc("GET "+p+"/providers/{pubkey}/agent-delegations", provider(s.liveListDelegations))
	m.HandleFunc("DELETE "+p+"/providers/{pubkey}/agent-delegations/{agentPubkey}", provider(s.liveRevoke))
	m.HandleFunc("GET "+p+"/providers/{pubkey}/agent-status", s.liveAgentStatus)
	gatewayRoutes(m, s, agent)
	return m
}

// livePath checks the provider in the path against the caller's: live
// decodes it (decode_pubkey) and compares it with the agent's delegating
// provider, answering mismatch when they differ.
func livePath(r *http.Request, c *caller, mismatch string) (string, error) {
	p, err := livePubkey(r.PathValue("pubkey"))
	if err != nil {
		return "", errorf(http.StatusBadRequest, "%v", err)
	}
	if p != c.provider {
		return "", errorf(http.StatusForbidden, "%s", mismatch)
	}
	return p, nil
}

// livePerm is AgentAuthenticatedUser::require_permission, whose refusal the
// handlers return as success:false.
func livePerm(c *caller, perm string) error {
	if c.deleg != nil && !c.deleg.Has(perm) {
		return errorf(http.StatusForbidden, "Agent does not have '%s' permission", perm)
	}
	return nil
}

// liveContractID is decode_hex_path(id, "contract id"): any hex is
// accepted; one that is not a contract id finds no contract.
func liveContractID(r *http.Request) (string, error) {
	v := r.PathValue("cid")
	if _, err := hex.DecodeString(v); err != nil {
		return "", errorf(http.StatusBadRequest, "Invalid contract id hex: %s (value: %s)", store.RustHexError(err), clip(v))
	}
	return strings.ToLower(v), nil
}

// livePendingContract is ContractWithSpecs
// (api/src/database/contracts/mod.rs): snake_case, absent fields omitted,
// and no requester_pubkey.
type livePendingContract struct {
	ContractID          string  `json:"contract_id"`
	OfferingID          string  `json:"offering_id"`
	RequesterSSHPubkey  string  `json:"requester_ssh_pubkey"`
	InstanceConfig      *string `json:"instance_config,omitempty"`
	CPUCores            *int    `json:"cpu_cores,omitempty"`
	MemoryAmount        *string `json:"memory_amount,omitempty"`
	StorageCapacity     *string `json:"storage_capacity,omitempty"`
	ProvisionerType     *string `json:"provisioner_type,omitempty"`
	ProvisionerConfig   *string `json:"provisioner_config,omitempty"`
	PostProvisionScript *string `json:"post_provision_script,omitempty"`
}

// livePending is get_pending_provision_contracts: only for an agent in a
// pool; no long-poll (the query is ignored).
func (s *Server) livePending(w http.ResponseWriter, r *http.Request, c *caller) error {
	provider, err := livePath(r, c, "Unauthorized: can only access your delegated provider's contracts")
	if err != nil {
		return err
	}
	if c.deleg.PoolID == nil {
		return errorf(http.StatusForbidden, "Agent must belong to a pool. Re-register using a setup token.")
	}
	pool, err := s.st.GetPool(r.Context(), *c.deleg.PoolID)
	if store.IsNotFound(err) {
		return errorf(http.StatusNotFound, "Pool %s not found", *c.deleg.PoolID)
	}
	if err != nil {
		return err
	}
	list, err := s.st.PendingLive(r.Context(), provider, pool, c.nowNs)
	if err != nil {
		return err
	}
	out := make([]livePendingContract, len(list))
	for i, p := range list {
		out[i] = livePendingContract{ContractID: p.ContractID, OfferingID: p.OfferingID, RequesterSSHPubkey: p.RequesterSSHPubkey,
			InstanceConfig: p.InstanceConfig, CPUCores: p.CPUCores, MemoryAmount: p.MemoryAmount, StorageCapacity: p.StorageCapacity,
			ProvisionerType: p.ProvisionerType, ProvisionerConfig: p.ProvisionerConfig, PostProvisionScript: p.PostProvisionScript}
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// writeEnvelope writes {"success":true,"data":…,"error":…}: live's answer
// when an operation succeeded but did nothing (a lock held by another
// agent, a lock not held).
func writeEnvelope(w http.ResponseWriter, data any, msg string) {
	b, _ := json.Marshal(envelope{Success: true, Data: data, Error: msg})
	writeEncoded(w, http.StatusOK, b)
}

// liveLock is acquire_lock (api/src/openapi/pools.rs).
func (s *Server) liveLock(w http.ResponseWriter, r *http.Request, c *caller) error {
	provider, err := livePath(r, c, "Agent is not delegated by this provider")
	if err != nil {
		return err
	}
	if err := livePerm(c, identity.PermProvision); err != nil {
		return err
	}
	cid, err := liveContractID(r)
	if err != nil {
		return err
	}
	res, err := s.st.LockLive(r.Context(), provider, cid, c.key, c.nowNs)
	if err != nil {
		return err
	}
	msg := ""
	if !res.Acquired {
		msg = "Contract already locked by another agent"
	}
	writeEnvelope(w, res, msg)
	return nil
}

// liveUnlock is release_lock (pools.rs).
func (s *Server) liveUnlock(w http.ResponseWriter, r *http.Request, c *caller) error {
	provider, err := livePath(r, c, "Agent is not delegated by this provider")
	if err != nil {
		return err
	}
	cid, err := liveContractID(r)
	if err != nil {
		return err
	}
	released, err := s.st.ReleaseLive(r.Context(), provider, cid, c.key)
	if err != nil {
		return err
	}
	msg := ""
	if !released {
		msg = "Lock not held by this agent"
	}
	writeEnvelope(w, released, msg)
	return nil
}

// liveProvisioning is update_provisioning_status (providers.rs); the rules
// are store.UpdateStatusLive's.
func (s *Server) liveProvisioning(w http.ResponseWriter, r *http.Request, c *caller) error {
	var req struct {
		Status          string  `json:"status"`
		InstanceDetails *string `json:"instanceDetails"`
	}
	if err := s.decode(r, c.body, schemaProvisioning, &req); err != nil {
		return err
	}
	cid, err := liveContractID(r)
	if err != nil {
		return err
	}
	details := ""
	if req.InstanceDetails != nil {
		details = *req.InstanceDetails
	}
	msg, err := s.st.UpdateStatusLive(r.Context(), c.provider, cid, c.key, req.Status, details, c.nowNs)
	if err != nil {
		return err
	}
	s.log.InfoContext(r.Context(), "contract status", "request_id", requestID(r.Context()), "contract", cid, "status", req.Status, "caller", short(c.key))
	writeJSON(w, http.StatusOK, msg)
	return nil
}

// liveHeartbeatRequest is HeartbeatRequest (api/src/openapi/agents.rs),
// checked by schemaHeartbeat before it is decoded.
type liveHeartbeatRequest struct {
	Version         *string                   `json:"version"`
	ProvisionerType *string                   `json:"provisionerType"`
	Capabilities    []string                  `json:"capabilities"`
	ActiveContracts int64                     `json:"activeContracts"`
	Resources       json.RawMessage           `json:"resources"`
	BandwidthStats  []dcapi.VMBandwidthReport `json:"bandwidthStats"`
}

// liveHeartbeat is send_heartbeat (agents.rs). Bandwidth stats are kept
// as snapshots (bandwidth.rs record_bandwidth); recording them never
// fails the heartbeat.
func (s *Server) liveHeartbeat(w http.ResponseWriter, r *http.Request, c *caller) error {
	var req liveHeartbeatRequest
	if err := s.decode(r, c.body, schemaHeartbeat, &req); err != nil {
		return err
	}
	provider, err := livePath(r, c, "Agent is not delegated by this provider")
	if err != nil {
		return err
	}
	if err := livePerm(c, identity.PermHeartbeat); err != nil {
		return err
	}
	if req.ActiveContracts < 0 || req.ActiveContracts > 1<<24 {
		return errorf(http.StatusUnprocessableEntity, "activeContracts %d out of range", req.ActiveContracts)
	}
	hb := dcapi.Heartbeat{Version: deref(req.Version), ProvisionerType: deref(req.ProvisionerType), Capabilities: req.Capabilities,
		ActiveContracts: int(req.ActiveContracts)}
	var res json.RawMessage
	if len(req.Resources) > 0 && string(req.Resources) != "null" {
		var b bytes.Buffer
		if err := json.Compact(&b, req.Resources); err != nil {
			return err
		}
		res = b.Bytes()
	}
	if err := s.st.RecordLiveHeartbeat(r.Context(), provider, c.key, hb, res, c.nowNs); err != nil {
		return err
	}
	s.recordBandwidth(r.Context(), c, req.BandwidthStats)
	writeJSON(w, http.StatusOK, s.heartbeatAck(r.Context(), c))
	return nil
}

func deref(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

// liveHealthRecord is ContractHealthCheck (api/src/database/contracts/mod.rs).
type liveHealthRecord struct {
	ID         int64   `json:"id"`
	ContractID string  `json:"contractId"`
	CheckedAt  int64   `json:"checkedAt"`
	Status     string  `json:"status"`
	LatencyMs  *int    `json:"latencyMs,omitempty"`
	Details    *string `json:"details,omitempty"`
	CreatedAt  int64   `json:"createdAt"`
}

// liveHealth is record_health_check (agents.rs).
func (s *Server) liveHealth(w http.ResponseWriter, r *http.Request, c *caller) error {
	var req struct {
		CheckedAt int64   `json:"checkedAt"`
		Status    string  `json:"status"`
		LatencyMs *int    `json:"latencyMs"`
		Details   *string `json:"details"`
	}
	if err := s.decode(r, c.body, schemaHealth, &req); err != nil {
		return err
	}
	if err := livePerm(c, identity.PermHealthCheck); err != nil {
		return err
	}
	cid, err := liveContractID(r)
	if err != nil {
		return err
	}
	ct, err := s.st.GetContract(r.Context(), cid)
	if err != nil {
		if store.KindOf(err) == store.KindNotFound || store.KindOf(err) == store.KindInvalid {
			return errorf(http.StatusNotFound, "Contract not found: %s", r.PathValue("cid"))
		}
		return err
	}
	if ct.ProviderPubkey != c.provider {
		return errorf(http.StatusForbidden, "Unauthorized: agent's provider (%s) does not match contract provider (%s)", c.provider, ct.ProviderPubkey)
	}
	h := dcapi.HealthCheck{ContractID: cid, CheckedAt: req.CheckedAt, Status: req.Status, LatencyMs: req.LatencyMs, Details: deref(req.Details)}
	recs, err := s.st.InsertHealthChecks(r.Context(), c.provider, c.key, []dcapi.HealthCheck{h}, c.nowNs)
	if err != nil {
		return err
	}
	rec := recs[0]
	writeJSON(w, http.StatusOK, liveHealthRecord{ID: rec.ID, ContractID: r.PathValue("cid"), CheckedAt: rec.CheckedAt, Status: rec.Status,
		LatencyMs: rec.LatencyMs, Details: req.Details, CreatedAt: c.nowNs})
	return nil
}

// liveReconcile is reconcile_instances (providers.rs).
func (s *Server) liveReconcile(w http.ResponseWriter, r *http.Request, c *caller) error {
	var req struct {
		RunningInstances []struct {
			ExternalID string  `json:"externalId"`
			ContractID *string `json:"contractId"`
		} `json:"runningInstances"`
	}
	if err := s.decode(r, c.body, schemaReconcile, &req); err != nil {
		return err
	}
	provider, err := livePath(r, c, "Unauthorized: can only reconcile your delegated provider's contracts")
	if err != nil {
		return err
	}
	running := make([]store.LiveInstance, len(req.RunningInstances))
	for i, in := range req.RunningInstances {
		running[i] = store.LiveInstance{ExternalID: in.ExternalID, ContractID: in.ContractID}
	}
	res, err := s.st.ReconcileLive(r.Context(), provider, running, c.nowNs)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, res)
	return nil
}

// liveTerminated is mark_contract_terminated (providers.rs): only a
// cancelled contract.
func (s *Server) liveTerminated(w http.ResponseWriter, r *http.Request, c *caller) error {
	if _, err := livePubkey(r.PathValue("pubkey")); err != nil {
		return errorf(http.StatusBadRequest, "%v", err)
	}
	cid, err := liveContractID(r)
	if err != nil {
		return err
	}
	provider, err := livePath(r, c, "Unauthorized: can only mark your delegated provider's contracts")
	if err != nil {
		return err
	}
	if err := s.st.MarkTerminatedLive(r.Context(), provider, cid, c.nowNs); err != nil {
		return err
	}
	s.log.InfoContext(r.Context(), "instance terminated", "request_id", requestID(r.Context()), "contract", cid, "agent", short(c.key))
	writeJSON(w, http.StatusOK, true)
	return nil
}

// liveListDelegations is list_delegations (agents.rs).
func (s *Server) liveListDelegations(w http.ResponseWriter, r *http.Request, c *caller) error {
	if err := s.ownProvider(r, c); err != nil {
		return err
	}
	list, err := s.st.ListDelegations(r.Context(), c.provider, c.nowNs)
	if store.IsNotFound(err) {
		list, err = []dcapi.DelegationInfo{}, nil
	}
	if err != nil {
		return err
	}
	for i := range list {
		list[i].IssuedAtNs = nil // dc-api's extension (docs/dc-api.md)
	}
	writeJSON(w, http.StatusOK, list)
	return nil
}

// liveRevoke is revoke_delegation (agents.rs).
func (s *Server) liveRevoke(w http.ResponseWriter, r *http.Request, c *caller) error {
	if err := s.ownProvider(r, c); err != nil {
		return err
	}
	agent, err := livePubkey(r.PathValue("agentPubkey"))
	if err != nil {
		return errorf(http.StatusBadRequest, "Invalid agent_pubkey: %v", err)
	}
	err = s.st.RevokeDelegation(r.Context(), c.provider, agent, c.nowNs)
	if store.IsNotFound(err) {
		writeEnvelope(w, false, "No active delegation found to revoke")
		return nil
	}
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, true)
	return nil
}

// liveAgentStatusAnswer is AgentStatus (api/src/database/agent_delegations.rs):
// resources as the agent reported them.
type liveAgentStatusAnswer struct {
	ProviderPubkey  string          `json:"providerPubkey"`
	Online          bool            `json:"online"`
	LastHeartbeatNs *int64          `json:"lastHeartbeatNs"`
	Version         *string         `json:"version"`
	ProvisionerType *string         `json:"provisionerType"`
	Capabilities    []string        `json:"capabilities"`
	ActiveContracts int64           `json:"activeContracts"`
	Resources       json.RawMessage `json:"resources"`
}

// liveAgentStatus is get_agent_status (agents.rs), public.
func (s *Server) liveAgentStatus(w http.ResponseWriter, r *http.Request) {
	err := func() error {
		provider, err := livePubkey(r.PathValue("pubkey"))
		if err != nil {
			return errorf(http.StatusBadRequest, "%v", err)
		}
		agents, err := s.st.Agents(r.Context(), provider)
		if err != nil {
			return err
		}
		if len(agents) == 0 {
			return errorf(http.StatusNotFound, "No agent status found for this provider")
		}
		a := agents[0]
		st := liveAgentStatusAnswer{ProviderPubkey: provider, Online: a.Online(s.now().UnixNano()), LastHeartbeatNs: &a.LastHeartbeatNs,
			Version: optional(a.Version), ProvisionerType: optional(a.ProvisionerType), Capabilities: a.Capabilities,
			ActiveContracts: int64(a.ActiveContracts), Resources: a.RawResources}
		if st.Resources == nil {
			st.Resources = json.RawMessage("null")
		}
		writeJSON(w, http.StatusOK, st)
		return nil
	}()
	if err != nil {
		s.writeError(w, r, err)
	}
}

func optional(v string) *string {
	if v == "" {
		return nil
	}
	return &v
}
