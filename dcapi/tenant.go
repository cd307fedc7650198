package dcapi

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"
	"time"
)

// Tenant requests: a tenant asks for a new root password or adds an SSH
// key to a running contract; the API queues the request for the
// provider's agent (live API: request_password_reset and rotate_ssh_key in
// api/src/openapi/contracts.rs; the agent's side in
// api/src/openapi/providers.rs).

// PasswordReset is one pending password reset.
type PasswordReset struct {
	ContractID string
	// RequestedAtNs is when the tenant asked; 0 when the server does not
	// say (the live API). A server that says speaks PROTOCOL.md's tenant
	// requests and takes failure reports (ReportPasswordFailure).
	RequestedAtNs int64
	// SealTo is the requester's Ed25519 key (hex) the new password must
	// be sealed to (PROTOCOL.md §7). Empty: the password goes in clear
	// over TLS and the server encrypts it to the requester key it holds
	// (the live API: update_encrypted_credentials,
	// api/src/database/contracts/provisioning.rs).
	SealTo string
}

// KeyRotation is one pending SSH key rotation.
type KeyRotation struct {
	ContractID string
	// SSHPubkey is the key the tenant wants added (not yet checked).
	SSHPubkey string
	// RequestedAtNs is as for PasswordReset.
	RequestedAtNs int64
}

// tenantItem is an item of either pending list. The live API sends
// snake_case names: poem-openapi's Object derive ignores serde's
// rename_all (`Contract` and `ContractPendingSshKeyRotation`,
// api/src/database/contracts/mod.rs); camelCase, which the Rust agent
// expects, is accepted too.
type tenantItem struct {
	ContractID    string `json:"contract_id"`
	ContractIDC   string `json:"contractId"`
	SSHPubkey     string `json:"requester_ssh_pubkey"`
	SSHPubkeyC    string `json:"requesterSshPubkey"`
	RequestedAtNs int64  `json:"requested_at_ns"`
	SealTo        string `json:"seal_to"`
}

func (t tenantItem) id() string {
	if t.ContractID != "" {
		return strings.ToLower(strings.TrimSpace(t.ContractID))
	}
	return strings.ToLower(strings.TrimSpace(t.ContractIDC))
}

// PendingPasswordResets lists the provider's pending password resets
// (GET /providers/{pk}/contracts/pending-password-reset), oldest first.
func (c *Client) PendingPasswordResets(ctx context.Context) ([]PasswordReset, error) {
	var items []tenantItem
	if _, err := c.Do(ctx, http.MethodGet, c.providerPath("/contracts/pending-password-reset"), nil, nil, &items, 0); err != nil {
		return nil, err
	}
	out := make([]PasswordReset, 0, len(items))
	for _, it := range items {
		out = append(out, PasswordReset{ContractID: it.id(), RequestedAtNs: it.RequestedAtNs, SealTo: strings.TrimSpace(it.SealTo)})
	}
	return out, nil
}

// PendingKeyRotations lists the provider's pending SSH key rotations
// (GET /providers/{pk}/contracts/pending-ssh-key-rotation), oldest first.
func (c *Client) PendingKeyRotations(ctx context.Context) ([]KeyRotation, error) {
	var items []tenantItem
	if _, err := c.Do(ctx, http.MethodGet, c.providerPath("/contracts/pending-ssh-key-rotation"), nil, nil, &items, 0); err != nil {
		return nil, err
	}
	out := make([]KeyRotation, 0, len(items))
	for _, it := range items {
		key := it.SSHPubkey
		if key == "" {
			key = it.SSHPubkeyC
		}
		out = append(out, KeyRotation{ContractID: it.id(), SSHPubkey: key, RequestedAtNs: it.RequestedAtNs})
	}
	return out, nil
}

// PasswordUpdate is the body of PUT /provider/rental-requests/{cid}/password
// (live: UpdatePasswordRequest, api/src/openapi/common.rs). NewPassword is
// plaintext for the live API (it encrypts it) or a sealed credential's
// JSON where the request named SealTo. Error instead reports a reset that
// failed, to servers that take failure reports (PROTOCOL.md).
type PasswordUpdate struct {
	NewPassword *string `json:"newPassword,omitempty"`
	Error       string  `json:"error,omitempty"`
}

// KeyRotationUpdate is the optional body of PUT …/ssh-key-rotation: empty
// when the key was added (the live API takes no body), Error when it
// failed (servers that take failure reports only).
type KeyRotationUpdate struct {
	Error string `json:"error,omitempty"`
}

// ReportPassword delivers a reset's new password, or its failure.
func (c *Client) ReportPassword(ctx context.Context, contractID string, u PasswordUpdate) error {
	p, err := idPath("/provider/rental-requests/", contractID, "/password")
	if err != nil {
		return err
	}
	_, err = c.Do(ctx, http.MethodPut, p, nil, u, nil, 0)
	return err
}

// ReportKeyRotation reports a rotation done (u zero: no body, as the live
// API's complete_ssh_key_rotation expects) or failed.
func (c *Client) ReportKeyRotation(ctx context.Context, contractID string, u KeyRotationUpdate) error {
	p, err := idPath("/provider/rental-requests/", contractID, "/ssh-key-rotation")
	if err != nil {
		return err
	}
	var body any
	if u.Error != "" {
		body = u
	}
	_, err = c.Do(ctx, http.MethodPut, p, nil, body, nil, 0)
	return err
}

// PasswordResetEvent is one event of the password-reset stream: the
// contracts with a pending reset, sent on connect and whenever the set
// changes.
type PasswordResetEvent struct {
	Count       int      `json:"count"`
	ContractIDs []string `json:"contract_ids"`
}

// EventPasswordResetCount is the stream's event name.
const EventPasswordResetCount = "password-reset-count"

// PasswordResetEvents follows GET /providers/{pk}/password-reset-events,
// the live API's server-sent event stream (password_reset_events,
// api/src/openapi/providers.rs: an event at once, then on every change,
// a keep-alive comment every 30 s; it accepts the agent's signed headers,
// authenticate_provider_or_agent_from_request in api/src/auth.rs). fn gets
// each event. It returns when ctx ends (nil) or the stream does: an
// *Error like Do's when the server refused it (IsNotFound: no stream
// here), a retryable one when it broke or stayed silent for idle.
func (c *Client) PasswordResetEvents(ctx context.Context, idle time.Duration, fn func(PasswordResetEvent)) error {
	path := c.providerPath("/password-reset-events")
	u := *c.base
	u.Path = c.base.Path + APIPrefix + path
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return fmt.Errorf("build GET %s: %w", path, err)
	}
	c.sign(req.Header, http.MethodGet, u.EscapedPath(), nil)
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("User-Agent", c.userAgent)
	fail := func(err error) error {
		if context.Cause(ctx) == errSilent {
			err = fmt.Errorf("no event or keep-alive for %s", idle)
		} else if ctx.Err() != nil {
			return nil
		}
		return &Error{Method: http.MethodGet, Path: path, Kind: KindRetryable, Err: err}
	}
	watch := time.AfterFunc(idle, func() { cancel(errSilent) })
	defer watch.Stop()
	resp, err := c.hc.Do(req)
	if err != nil {
		return fail(err)
	}
	defer resp.Body.Close()
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); resp.StatusCode != http.StatusOK || mt != "text/event-stream" {
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		if err := decodeResponse(http.MethodGet, path, resp.StatusCode, resp.Header, data, nil, c.now); err != nil {
			return err
		}
		return &Error{Method: http.MethodGet, Path: path, StatusCode: resp.StatusCode, Kind: KindNotFound, Message: "the answer is not an event stream"}
	}
	c.log.Debug("api event stream open", "path", path)
	err = ReadEvents(resp.Body, func(ev Event) error {
		watch.Reset(idle)
		if ev.Name != EventPasswordResetCount || ev.Data == "" {
			return nil // a keep-alive, or an event this agent does not know
		}
		var e PasswordResetEvent
		if json.Unmarshal([]byte(ev.Data), &e) != nil {
			c.log.Debug("api event stream: malformed event ignored", "path", path)
			return nil
		}
		for i, id := range e.ContractIDs {
			e.ContractIDs[i] = strings.ToLower(strings.TrimSpace(id))
		}
		fn(e)
		return nil
	})
	if err == nil {
		err = io.ErrUnexpectedEOF
	}
	return fail(err)
}

var errSilent = errors.New("event stream silent")

// Event is one server-sent event (its comments and keep-alives have no
// name and no data).
type Event struct {
	Name string
	Data string
}

// Limits of ReadEvents.
const (
	maxEventLine = 64 << 10
	maxEventData = 1 << 20
)

// ReadEvents parses a text/event-stream (the WHATWG server-sent events
// format: "event:" and "data:" fields, a blank line ends an event, lines
// starting with ":" are comments) from r and calls fn for each event and
// each comment (as an empty Event, so the caller sees the stream is
// alive). It returns nil at EOF, fn's error, or an error for a line
// longer than 64 KiB or an event larger than 1 MiB.
func ReadEvents(r io.Reader, fn func(Event) error) error {
	br := bufio.NewReaderSize(r, 4096)
	var ev Event
	var data strings.Builder
	hasData := false
	for {
		line, err := readLine(br)
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		switch {
		case len(line) == 0:
			if hasData || ev.Name != "" {
				ev.Data = data.String()
				if ev.Name == "" {
					ev.Name = "message"
				}
				if err := fn(ev); err != nil {
					return err
				}
			}
			ev, hasData = Event{}, false
			data.Reset()
			continue
		case line[0] == ':':
			if err := fn(Event{}); err != nil {
				return err
			}
			continue
		}
		field, value, _ := bytes.Cut(line, []byte(":"))
		value = bytes.TrimPrefix(value, []byte(" "))
		switch string(field) {
		case "event":
			ev.Name = string(value)
		case "data":
			if hasData {
				data.WriteByte('\n')
			}
			if data.Len()+len(value) > maxEventData {
				return fmt.Errorf("event stream: an event is larger than %d bytes", maxEventData)
			}
			data.Write(value)
			hasData = true
		}
	}
}

// readLine reads one line ending in \n, \r\n or \r, without it.
func readLine(br *bufio.Reader) ([]byte, error) {
	var line []byte
	for {
		b, err := br.ReadByte()
		if err != nil {
			if errors.Is(err, io.EOF) && len(line) > 0 {
				return line, nil
			}
			return nil, err
		}
		switch b {
		case '\n':
			return line, nil
		case '\r':
			if next, err := br.Peek(1); err == nil && next[0] == '\n' {
				_, _ = br.ReadByte()
			}
			return line, nil
		}
		if len(line) >= maxEventLine {
			return nil, fmt.Errorf("event stream: a line is longer than %d bytes", maxEventLine)
		}
		line = append(line, b)
	}
}
