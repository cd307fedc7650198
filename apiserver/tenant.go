package apiserver

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/decent-stuff/dc-agent/apiserver/store"
	"github.com/decent-stuff/dc-agent/dcapi"
	"github.com/decent-stuff/dc-agent/identity"
)

// Tenant requests (password resets, SSH key rotations): the agent's side,
// in both profiles. The tenant's side is `dc-api contract reset-password`
// and `dc-api contract rotate-ssh-key` (dc-api has no tenant accounts).
// The live profile follows api/src/openapi/providers.rs
// (get_pending_password_reset_contracts,
// get_pending_ssh_key_rotation_contracts, update_contract_password,
// complete_ssh_key_rotation, password_reset_events); the default profile
// adds what PROTOCOL.md says about them: each pending item carries when it
// was asked for and the key a new password is sealed to (seal_to), and the
// agent may report a request that failed, which the tenant reads.

func tenantRoutes(m *http.ServeMux, s *Server) {
	p := dcapi.APIPrefix
	if s.live {
		agent := func(h authedHandler) http.HandlerFunc { return s.signedLive(liveAgent, h) }
		either := func(h authedHandler) http.HandlerFunc { return s.signedLive(liveEither, h) }
		m.HandleFunc("GET "+p+"/providers/{pubkey}/contracts/pending-password-reset", either(s.livePendingResets))
		m.HandleFunc("GET "+p+"/providers/{pubkey}/contracts/pending-ssh-key-rotation", agent(s.livePendingRotations))
		m.HandleFunc("PUT "+p+"/provider/rental-requests/{cid}/password", either(s.livePassword))
		m.HandleFunc("PUT "+p+"/provider/rental-requests/{cid}/ssh-key-rotation", either(s.liveKeyRotation))
		m.HandleFunc("GET "+p+"/providers/{pubkey}/password-reset-events", either(s.passwordResetEvents))
		return
	}
	fetch := endpoint{access: agentOnly, perm: identity.PermFetchContracts}
	report := endpoint{access: agentOnly, perm: identity.PermProvision, source: fromContract}
	m.HandleFunc("GET "+p+"/providers/{pubkey}/contracts/pending-password-reset", s.signed(fetch, s.pendingResets))
	m.HandleFunc("GET "+p+"/providers/{pubkey}/contracts/pending-ssh-key-rotation", s.signed(fetch, s.pendingRotations))
	m.HandleFunc("PUT "+p+"/provider/rental-requests/{cid}/password", s.signed(report, s.passwordUpdate))
	m.HandleFunc("PUT "+p+"/provider/rental-requests/{cid}/ssh-key-rotation", s.signed(report, s.keyRotationUpdate))
	m.HandleFunc("GET "+p+"/providers/{pubkey}/password-reset-events", s.signed(fetch, s.passwordResetEvents))
}

// pendingReset is an item of the default profile's pending-password-reset.
type pendingReset struct {
	ContractID    string `json:"contract_id"`
	RequestedAtNs int64  `json:"requested_at_ns"`
	// SealTo is the requester's Ed25519 key (hex) the new password is
	// sealed to: requester_pubkey, else the requester's ssh-ed25519 key
	// (PROTOCOL.md §7); "" when there is neither, and no password can
	// reach the tenant.
	SealTo string `json:"seal_to"`
}

func (s *Server) pendingResets(w http.ResponseWriter, r *http.Request, c *caller) error {
	list, err := s.st.PendingTenantRequests(r.Context(), c.provider, store.RequestPasswordReset)
	if err != nil {
		return err
	}
	out := make([]pendingReset, len(list))
	for i, t := range list {
		out[i] = pendingReset{ContractID: t.ContractID, RequestedAtNs: t.RequestedAtNs}
		if pub, ok, err := identity.SealRecipient(t.RequesterPubkey, t.RequesterSSHPubkey); err == nil && ok {
			out[i].SealTo = hex.EncodeToString(pub)
		}
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// pendingRotation is an item of pending-ssh-key-rotation:
// ContractPendingSshKeyRotation (api/src/database/contracts/mod.rs), plus
// requested_at_ns in the default profile.
type pendingRotation struct {
	ContractID         string `json:"contract_id"`
	RequesterSSHPubkey string `json:"requester_ssh_pubkey"`
	RequestedAtNs      int64  `json:"requested_at_ns,omitempty"`
}

func (s *Server) pendingRotations(w http.ResponseWriter, r *http.Request, c *caller) error {
	return s.writeRotations(w, r, c.provider, true)
}

func (s *Server) writeRotations(w http.ResponseWriter, r *http.Request, provider string, withTime bool) error {
	list, err := s.st.PendingTenantRequests(r.Context(), provider, store.RequestKeyRotation)
	if err != nil {
		return err
	}
	out := make([]pendingRotation, len(list))
	for i, t := range list {
		out[i] = pendingRotation{ContractID: t.ContractID, RequesterSSHPubkey: deref(t.SSHPubkey)}
		if withTime {
			out[i].RequestedAtNs = t.RequestedAtNs
		}
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// passwordUpdate takes {"newPassword": sealed credential} or {"error": why}.
func (s *Server) passwordUpdate(w http.ResponseWriter, r *http.Request, c *caller) error {
	var req dcapi.PasswordUpdate
	if err := decodeBody(c.body, &req); err != nil {
		return err
	}
	cid := r.PathValue("cid")
	var err error
	switch {
	case (req.NewPassword == nil) == (req.Error == ""):
		return errorf(http.StatusBadRequest, `the body must carry exactly one of "newPassword" (the sealed new password) and "error" (why the reset failed)`)
	case req.Error != "":
		err = s.st.FailTenantRequest(r.Context(), c.provider, cid, store.RequestPasswordReset, req.Error, c.nowNs)
	default:
		err = s.st.SetPassword(r.Context(), c.provider, cid, *req.NewPassword, false, c.nowNs)
	}
	if err != nil {
		return err
	}
	s.tenantDone(r, c, cid, "password reset", req.Error)
	writeJSON(w, http.StatusOK, "Password updated successfully")
	return nil
}

// keyRotationUpdate takes no body (the key was added) or {"error": why}.
func (s *Server) keyRotationUpdate(w http.ResponseWriter, r *http.Request, c *caller) error {
	var req dcapi.KeyRotationUpdate
	if len(strings.TrimSpace(string(c.body))) > 0 {
		if err := decodeBody(c.body, &req); err != nil {
			return err
		}
	}
	cid := r.PathValue("cid")
	var err error
	if req.Error != "" {
		err = s.st.FailTenantRequest(r.Context(), c.provider, cid, store.RequestKeyRotation, req.Error, c.nowNs)
	} else {
		_, err = s.st.CompleteKeyRotation(r.Context(), c.provider, cid, c.nowNs)
	}
	if err != nil {
		return err
	}
	s.tenantDone(r, c, cid, "SSH key rotation", req.Error)
	writeJSON(w, http.StatusOK, "SSH key rotation completed successfully")
	return nil
}

// tenantDone logs a finished request (never the password) and wakes the
// provider's event streams.
func (s *Server) tenantDone(r *http.Request, c *caller, cid, what, failure string) {
	if failure != "" {
		s.log.InfoContext(r.Context(), what+" failed", "request_id", requestID(r.Context()), "contract", cid, "caller", short(c.key), "error", failure)
	} else {
		s.log.InfoContext(r.Context(), what+" done", "request_id", requestID(r.Context()), "contract", cid, "caller", short(c.key))
	}
	s.hub.notify(c.provider)
}

// livePendingResets is get_pending_password_reset_contracts: live answers
// whole `Contract` rows (snake_case); dc-api answers the fields of them it
// holds.
func (s *Server) livePendingResets(w http.ResponseWriter, r *http.Request, c *caller) error {
	provider, err := livePath(r, c, "Unauthorized: can only access your own provider's contracts")
	if err != nil {
		return err
	}
	list, err := s.st.PendingTenantRequests(r.Context(), provider, store.RequestPasswordReset)
	if err != nil {
		return err
	}
	type liveContract struct {
		ContractID         string `json:"contract_id"`
		RequesterPubkey    string `json:"requester_pubkey"`
		RequesterSSHPubkey string `json:"requester_ssh_pubkey"`
		ProviderPubkey     string `json:"provider_pubkey"`
		OfferingID         string `json:"offering_id"`
		Status             string `json:"status"`
		CreatedAtNs        int64  `json:"created_at_ns"`
		StatusUpdatedAtNs  int64  `json:"status_updated_at_ns"`
		EndTimestampNs     *int64 `json:"end_timestamp_ns,omitempty"`
	}
	out := make([]liveContract, len(list))
	for i, t := range list {
		out[i] = liveContract{ContractID: t.ContractID, RequesterPubkey: t.RequesterPubkey, RequesterSSHPubkey: t.RequesterSSHPubkey,
			ProviderPubkey: t.ProviderPubkey, OfferingID: t.OfferingID, Status: t.Status, CreatedAtNs: t.CreatedAtNs,
			StatusUpdatedAtNs: t.StatusUpdatedAtNs, EndTimestampNs: t.EndsAtNs}
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// livePendingRotations is get_pending_ssh_key_rotation_contracts.
func (s *Server) livePendingRotations(w http.ResponseWriter, r *http.Request, c *caller) error {
	provider, err := livePath(r, c, "Unauthorized: can only access your delegated provider's contracts")
	if err != nil {
		return err
	}
	return s.writeRotations(w, r, provider, false)
}

// schemaUpdatePassword is UpdatePasswordRequest (api/src/openapi/common.rs).
var schemaUpdatePassword = object("UpdatePasswordRequest", req("newPassword", sString))

// livePassword is update_contract_password: a plaintext password, which
// the server seals to the requester's key itself.
func (s *Server) livePassword(w http.ResponseWriter, r *http.Request, c *caller) error {
	var req struct {
		NewPassword string `json:"newPassword"`
	}
	if err := s.decode(r, c.body, schemaUpdatePassword, &req); err != nil {
		return err
	}
	cid, err := liveContractID(r)
	if err != nil {
		return err
	}
	if err := s.st.SetPassword(r.Context(), c.provider, cid, req.NewPassword, true, c.nowNs); err != nil {
		return err
	}
	s.tenantDone(r, c, cid, "password reset", "")
	writeJSON(w, http.StatusOK, "Password updated successfully")
	return nil
}

// liveKeyRotation is complete_ssh_key_rotation (no body).
func (s *Server) liveKeyRotation(w http.ResponseWriter, r *http.Request, c *caller) error {
	cid, err := liveContractID(r)
	if err != nil {
		return err
	}
	if _, err := s.st.CompleteKeyRotation(r.Context(), c.provider, cid, c.nowNs); err != nil {
		return err
	}
	s.tenantDone(r, c, cid, "SSH key rotation", "")
	writeJSON(w, http.StatusOK, "SSH key rotation completed successfully")
	return nil
}

// keepAliveEvery is how often an idle event stream sends a comment, as
// live's SSE keep_alive (30 s).
const keepAliveEvery = 30 * time.Second

// passwordResetEvents is password_reset_events: a server-sent event
// stream of the provider's pending resets, `event: password-reset-count`
// with {"count","contract_ids"} at once and whenever the set changes, a
// keep-alive comment every 30 s. Live re-reads the database every 5 s;
// dc-api re-reads when the provider's contracts change (the long-poll
// hub) and at each keep-alive. A refusal is plain text, as poem's.
func (s *Server) passwordResetEvents(w http.ResponseWriter, r *http.Request, c *caller) error {
	p, err := livePubkey(r.PathValue("pubkey"))
	if err != nil {
		return plainf(http.StatusBadRequest, "%v", err)
	}
	if p != c.provider {
		return plainf(http.StatusForbidden, "Unauthorized: can only access your own provider's contracts")
	}
	rc := http.NewResponseController(w)
	// The server's write timeout is for ordinary answers, not a stream.
	_ = rc.SetWriteDeadline(time.Time{})
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	var last []string
	first := true
	tick := time.NewTicker(keepAliveEvery)
	defer tick.Stop()
	drain := drainCh(r.Context())
	for {
		woken, done := s.hub.subscribe(c.provider)
		list, err := s.st.PendingTenantRequests(r.Context(), c.provider, store.RequestPasswordReset)
		if err != nil {
			done()
			s.log.WarnContext(r.Context(), "password-reset-events: database read failed; ending the stream", "err", err)
			return nil
		}
		ids := make([]string, len(list))
		for i, t := range list {
			ids[i] = t.ContractID
		}
		if first || !slices.Equal(ids, last) {
			first, last = false, ids
			b, _ := json.Marshal(dcapi.PasswordResetEvent{Count: len(ids), ContractIDs: ids})
			if _, err := fmt.Fprintf(w, "event: %s\ndata: %s\n\n", dcapi.EventPasswordResetCount, b); err != nil {
				done()
				return nil
			}
			_ = rc.Flush()
		}
		select {
		case <-woken:
		case <-tick.C:
			if _, err := fmt.Fprint(w, ":\n\n"); err != nil {
				done()
				return nil
			}
			_ = rc.Flush()
		case <-drain:
			done()
			return nil
		case <-r.Context().Done():
			done()
			return nil
		}
		done()
	}
}
