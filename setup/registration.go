package setup

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/decent-stuff/dc-agent/identity"
)

// registration is one way to make the API accept the agent key; the API
// answer's Method picks it (newRegistration): the setup token of the
// Decent Cloud dashboard (setupToken) or an offline-signed delegation
// (delegation). Each has its constant, its fields in APIAnswer and its
// check in Flow.checkAPI; the front ends ask for those fields and show the
// plan events.
type registration interface {
	// keySteps run in the backend's plan right after the agent key step
	// and before the config step, which reads the answers when it runs: a
	// method that learns the provider (and pool) from the API registers
	// here and hands them to t.learned, so the config names them.
	keySteps(f *Flow, t keyTarget) []Step
	// register runs after the node plan (PhaseRegister): it asks what it
	// needs, registers, and returns errLater if the provider registers
	// later.
	register(ctx context.Context, f *Flow) error
}

func newRegistration(a APIAnswer) registration {
	switch a.Method {
	case MethodSetupToken:
		return setupToken{token: a.SetupToken}
	default:
		return delegation{}
	}
}

// setupToken registers with a one-time setup token (token.go) in the node
// plan, right after the agent key: the API answers with the provider and
// the pool, which the config step then writes.
type setupToken struct{ token string }

// keyTarget is where a registration in the plan registers: the agent key
// (filled by the key step), the config and the API; learned completes
// the plan's answers with what the API answered.
type keyTarget struct {
	ConfigPath, KeyPath, Endpoint, UserAgent string
	Key                                      *KeyStatus
	learned                                  func(provider string, pool Pool)
}

func (s setupToken) keySteps(f *Flow, t keyTarget) []Step {
	var reg TokenRegistration
	step := TokenStep(TokenStepOptions{ConfigPath: t.ConfigPath, KeyPath: t.KeyPath, Endpoint: t.Endpoint, Token: s.token,
		UserAgent: t.UserAgent, Key: t.Key, Result: &reg})
	register := step.Run
	step.Run = func(ctx context.Context, r *Reporter) error {
		if err := register(ctx, r); err != nil {
			return err
		}
		t.learned(reg.ProviderPubkey, reg.Pool)
		f.mu.Lock()
		f.ans.ProviderPubkey, f.ans.Pool = reg.ProviderPubkey, reg.Pool
		f.mu.Unlock()
		return nil
	}
	return []Step{step}
}

// register: the node plan registered the agent already.
func (setupToken) register(context.Context, *Flow) error { return nil }

// delegation registers an offline-signed delegation: the flow shows the
// dcdr1: request, the provider signs it with the main key and pastes the
// dcds1: answer (or passes it as --delegation).
type delegation struct{}

func (delegation) keySteps(*Flow, keyTarget) []Step { return nil }

func (delegation) register(ctx context.Context, f *Flow) error {
	a, key := f.answers(), f.Summary().Key
	code := strings.TrimSpace(a.Delegation)
	if code == "" {
		if detail, ok := f.alreadyRegistered(ctx, key); ok {
			return f.runPlan(ctx, PhaseRegister, func() (*Plan, error) {
				return &Plan{Steps: []Step{{ID: "register", Title: "Register the agent", Run: func(ctx context.Context, r *Reporter) error {
					r.Skip("%s", detail)
					return nil
				}}}}, nil
			})
		}
	}
	var q *DelegationQuestion
	for {
		if code == "" {
			if q == nil {
				var err error
				if q, err = f.delegationQuestion(key); err != nil {
					return err
				}
			}
			pasted, err := f.ui.Delegate(ctx, *q)
			switch {
			case errors.Is(err, ErrBack):
				continue
			case err != nil:
				return err
			}
			if code = strings.TrimSpace(pasted); code == "" {
				return errLater
			}
			if _, _, q.Err = q.Check(code); q.Err != nil {
				code = ""
				continue
			}
		}
		err := f.runPlan(ctx, PhaseRegister, func() (*Plan, error) {
			return &Plan{Steps: []Step{RegisterStep(code, key, a.ProviderPubkey, a.Client, f.now)}}, nil
		})
		if !errors.Is(err, ErrBack) {
			return err
		}
		code = "" // back: paste another one
	}
}

// delegationQuestion builds the request for the agent key and keeps it in
// a file beside the config.
func (f *Flow) delegationQuestion(key *KeyStatus) (*DelegationQuestion, error) {
	a, ra := f.answers(), f.o.Request
	ra.Provider = a.ProviderPubkey
	d, code, err := DelegationRequest(key.Pubkey, ra, f.now())
	if err != nil {
		return nil, err
	}
	file := RequestFilePath(a.ConfigPath)
	if os.WriteFile(file, []byte(code+"\n"), 0o600) != nil {
		file = ""
	}
	f.mu.Lock()
	f.reqCode, f.reqFile = code, file
	f.mu.Unlock()
	return &DelegationQuestion{Request: d, Code: code, File: file, Check: func(s string) (identity.SignedDelegation, []string, error) {
		return AcceptDelegation(s, key.Pubkey, a.ProviderPubkey, f.now())
	}}, nil
}

// alreadyRegistered asks the API whether it already holds an active
// delegation for the agent key from this provider. An API that does not
// say (unreachable, or one that shows delegations only to the provider's
// main key) counts as "not known": the provider is offered the request.
func (f *Flow) alreadyRegistered(ctx context.Context, key *KeyStatus) (string, bool) {
	c, err := f.answers().Client(key.Key)
	if err != nil {
		return "", false
	}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	d, found, err := RegisteredDelegation(ctx, c, key.Pubkey)
	if err != nil || !found || !d.Active {
		return "", false
	}
	exp := "never expires"
	if d.ExpiresAtNs != nil {
		exp = "expires " + time.Unix(0, *d.ExpiresAtNs).UTC().Format(time.RFC3339)
	}
	return fmt.Sprintf("already registered with %s: it holds the delegation of agent %s (%s; %s)",
		c.Endpoint(), key.Pubkey, strings.Join(d.Permissions, ", "), exp), true
}
