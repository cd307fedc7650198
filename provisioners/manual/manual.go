// Package manual is the provisioner for providers who set machines up by
// hand: it tells the provider about each contract (a log line, and a JSON
// POST to a webhook if configured) and leaves the contract for the provider
// to complete on the dashboard. It never fails a contract by itself.
//
// The webhook body carries a "text" field, so Slack and Mattermost incoming
// webhooks show a readable message, plus structured fields for automation.
// It never carries secrets.
package manual

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"time"

	"github.com/decent-stuff/dc-agent/config"
	"github.com/decent-stuff/dc-agent/provisioners"
)

// Type is the registry name.
const Type = config.TypeManual

// Webhook events.
const (
	EventProvisionRequested   = "provision_requested"
	EventTerminationRequested = "termination_requested"
	// Tenant requests, carried out by the provider by hand.
	EventPasswordResetRequested = "password_reset_requested"
	EventKeyRotationRequested   = "ssh_key_rotation_requested"
)

// Register adds the manual provisioner to r.
func Register(r *provisioners.Registry) { r.Register(Type, New) }

// Provisioner notifies the provider.
type Provisioner struct {
	webhook  string
	hc       *http.Client
	log      *slog.Logger
	attempts int
	pause    time.Duration
}

// New builds a manual provisioner.
func New(pc config.ProvisionerConfig, deps provisioners.Deps) (provisioners.Provisioner, error) {
	p := &Provisioner{hc: &http.Client{Timeout: 10 * time.Second}, log: deps.Logger, attempts: 3, pause: time.Second}
	if pc.Manual != nil {
		p.webhook = pc.Manual.NotificationWebhook
	}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	return p, nil
}

// Type implements provisioners.Provisioner.
func (p *Provisioner) Type() string { return Type }

// Features implements provisioners.Provisioner: nothing is created, so
// nothing can be listed, checked or removed automatically.
func (p *Provisioner) Features() provisioners.Features {
	return provisioners.Features{Manual: true, Pause: true, ResetPassword: true, RotateSSHKey: true}
}

// RequesterKeys implements provisioners.RequesterSettable: a manual
// backend reads no config and creates nothing; the provider reads the
// contract's instance_config on the dashboard and decides by hand.
func (p *Provisioner) RequesterKeys() []provisioners.RequesterKey {
	return []provisioners.RequesterKey{{Name: provisioners.AnyKey}}
}

// Notification is the webhook body.
type Notification struct {
	Text               string `json:"text"`
	Event              string `json:"event"`
	ContractID         string `json:"contract_id"`
	InstanceName       string `json:"instance_name"`
	OfferingID         string `json:"offering_id,omitempty"`
	CPUCores           int    `json:"cpu_cores,omitempty"`
	MemoryMB           int64  `json:"memory_mb,omitempty"`
	StorageGB          int64  `json:"storage_gb,omitempty"`
	ProductType        string `json:"product_type,omitempty"`
	DatacenterCity     string `json:"datacenter_city,omitempty"`
	RequesterSSHPubkey string `json:"requester_ssh_pubkey,omitempty"`
	ExternalID         string `json:"external_id,omitempty"`
}

// Provision logs the contract and notifies the webhook. It returns an empty
// instance: the agent reports nothing for manual backends; the provider
// completes the contract on the dashboard. A webhook that keeps failing is
// a retryable error (the agent tries again later), never a failed contract.
func (p *Provisioner) Provision(ctx context.Context, req provisioners.Request) (provisioners.Instance, error) {
	n := Notification{
		Event: EventProvisionRequested, ContractID: req.ContractID, InstanceName: provisioners.InstanceName(req.ContractID),
		OfferingID: req.OfferingID, CPUCores: req.CPUCores, MemoryMB: req.MemoryMB, StorageGB: req.StorageGB,
		ProductType: req.ProductType, DatacenterCity: req.DatacenterCity, RequesterSSHPubkey: req.RequesterSSHPubkey,
	}
	n.Text = fmt.Sprintf("Decent Cloud contract %s needs provisioning by hand: offering %s, %s. Create %s, then enter its details on the provider dashboard.",
		short(req.ContractID), orDash(req.OfferingID), sizeText(req), n.InstanceName)
	p.log.Warn("contract needs manual provisioning", "contract", req.ContractID, "offering", req.OfferingID,
		"cpu_cores", req.CPUCores, "memory_mb", req.MemoryMB, "storage_gb", req.StorageGB, "instance_name", n.InstanceName)
	req.Step("notifying provider")
	if err := p.notify(ctx, n); err != nil {
		return provisioners.Instance{}, provisioners.Retryable(err)
	}
	return provisioners.Instance{ContractID: req.ContractID, Name: n.InstanceName}, nil
}

// Terminate asks the provider to remove the instance; it cannot confirm
// that it happened, so it always returns an error saying so.
func (p *Provisioner) Terminate(ctx context.Context, externalID string) error {
	n := Notification{Event: EventTerminationRequested, ExternalID: externalID,
		Text: fmt.Sprintf("Decent Cloud: instance %s should be removed by hand (its contract ended).", externalID)}
	p.log.Warn("instance needs manual termination", "external_id", externalID)
	if err := p.notify(ctx, n); err != nil {
		return err
	}
	return errors.New("manual provisioner: the provider removes instances by hand")
}

// ResetPassword implements provisioners.PasswordResetter by telling the
// provider, who sets a new password by hand and enters it on the provider
// dashboard (the agent's proposal is not used and never leaves the agent).
// It returns provisioners.ErrHandedOff once the provider was told.
func (p *Provisioner) ResetPassword(ctx context.Context, contractID, externalID, _ string) (string, error) {
	n := Notification{Event: EventPasswordResetRequested, ContractID: contractID, InstanceName: provisioners.InstanceName(contractID), ExternalID: externalID,
		Text: fmt.Sprintf("Decent Cloud: the tenant of contract %s asks for a new root password. Set one on %s by hand, then enter it on the provider dashboard.",
			short(contractID), provisioners.InstanceName(contractID))}
	p.log.Warn("tenant asks for a password reset; carry it out by hand", "contract", contractID)
	if err := p.notify(ctx, n); err != nil {
		return "", provisioners.Retryable(err)
	}
	return "", provisioners.ErrHandedOff
}

// RotateSSHKey implements provisioners.KeyRotator by telling the provider,
// who adds the key by hand (the key is public and goes in the message).
func (p *Provisioner) RotateSSHKey(ctx context.Context, contractID, externalID, pubkey string) error {
	n := Notification{Event: EventKeyRotationRequested, ContractID: contractID, InstanceName: provisioners.InstanceName(contractID), ExternalID: externalID,
		RequesterSSHPubkey: pubkey,
		Text: fmt.Sprintf("Decent Cloud: the tenant of contract %s asks to add a new SSH key to %s: %s — add it to the login user's authorized_keys by hand, then mark the rotation done on the provider dashboard.",
			short(contractID), provisioners.InstanceName(contractID), pubkey)}
	p.log.Warn("tenant asks for an SSH key rotation; carry it out by hand", "contract", contractID)
	if err := p.notify(ctx, n); err != nil {
		return provisioners.Retryable(err)
	}
	return provisioners.ErrHandedOff
}

// HealthCheck cannot observe anything.
func (p *Provisioner) HealthCheck(ctx context.Context, externalID string) (provisioners.Health, error) {
	return provisioners.Health{Status: provisioners.Unknown, Reason: "manual provisioner cannot observe instances"}, nil
}

// GetInstance knows no instances.
func (p *Provisioner) GetInstance(ctx context.Context, contractID string) (*provisioners.Instance, error) {
	return nil, nil
}

// List knows no instances.
func (p *Provisioner) List(ctx context.Context) ([]provisioners.Instance, error) { return nil, nil }

func (p *Provisioner) notify(ctx context.Context, n Notification) error {
	if p.webhook == "" {
		return nil
	}
	body, err := json.Marshal(n)
	if err != nil {
		return err
	}
	var last error
	for i := 0; i < p.attempts; i++ {
		if i > 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(p.pause << (i - 1)):
			}
		}
		if last = p.post(ctx, body); last == nil {
			return nil
		}
		p.log.Debug("notification webhook failed", "attempt", i+1, "err", last)
	}
	return fmt.Errorf("notification webhook: %w", last)
}

func (p *Provisioner) post(ctx context.Context, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.webhook, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "dc-agent")
	resp, err := p.hc.Do(req)
	if err != nil {
		// The URL may embed a token (Slack's does): name the host only.
		return fmt.Errorf("POST to %s failed: %w", req.URL.Host, unwrapURLError(err))
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("POST to %s answered %s", req.URL.Host, resp.Status)
	}
	return nil
}

// unwrapURLError drops the *url.Error wrapper, whose text repeats the full
// URL (and with it any token in the path).
func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) && ue.Err != nil {
		return ue.Err
	}
	return err
}

func short(id string) string {
	if len(id) > 12 {
		return id[:12] + "…"
	}
	return id
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func sizeText(r provisioners.Request) string {
	s := ""
	if r.CPUCores > 0 {
		s += fmt.Sprintf("%d vCPU ", r.CPUCores)
	}
	if r.MemoryMB > 0 {
		s += fmt.Sprintf("%d MB RAM ", r.MemoryMB)
	}
	if r.StorageGB > 0 {
		s += fmt.Sprintf("%d GB disk ", r.StorageGB)
	}
	if s == "" {
		return "default size"
	}
	return s[:len(s)-1]
}
