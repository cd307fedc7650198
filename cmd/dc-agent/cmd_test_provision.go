package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/crypto/ssh"

	"github.com/decent-stuff/dc-agent/provisioners"
	"github.com/decent-stuff/dc-agent/provisioners/all"
)

// testStep is one timed step of test-provision.
type testStep struct {
	Step    string  `json:"step"`
	Seconds float64 `json:"seconds"`
	Error   string  `json:"error,omitempty"`
}

// testReport is test-provision's --json output.
type testReport struct {
	OK          bool                 `json:"ok"`
	Provisioner string               `json:"provisioner"`
	ContractID  string               `json:"contract_id"`
	Instance    *testInstance        `json:"instance,omitempty"`
	Health      *provisioners.Health `json:"health,omitempty"`
	Terminated  bool                 `json:"terminated"`
	Kept        bool                 `json:"kept"`
	Steps       []testStep           `json:"steps"`
	Seconds     float64              `json:"seconds"`
	Error       string               `json:"error,omitempty"`
}

type testInstance struct {
	ExternalID  string `json:"external_id"`
	Name        string `json:"name"`
	IPAddress   string `json:"ip_address,omitempty"`
	IPv6Address string `json:"ipv6_address,omitempty"`
	SSHPort     int    `json:"ssh_port,omitempty"`
}

func newTestProvisionCmd(g *globals) *cobra.Command {
	var pubkeyArg string
	var keep, asJSON bool
	var cores int
	var memoryMB, storageGB int64
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "test-provision [--ssh-pubkey KEY|file:PATH] [--keep] [--json]",
		Short: "Create a test instance with the configured provisioner, check it, and remove it",
		Long: `Create a test instance through the configured provisioner exactly as a paid
contract would (Proxmox: clone, configure, start, wait for the guest agent's IP),
health-check it, and terminate it unless --keep. Each step is printed with its
timing. No Decent Cloud API is involved.

Without --ssh-pubkey a throwaway key is used, so you cannot log in to the test
instance; pass your own key (or file:~/.ssh/id_ed25519.pub) with --keep to try.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := g.loadConfig()
			if err != nil {
				return err
			}
			key := ""
			if pubkeyArg != "" {
				if key, err = readValue(pubkeyArg, cmd.InOrStdin()); err != nil {
					return usagef("--ssh-pubkey: %v", err)
				}
				if _, _, _, _, err := ssh.ParseAuthorizedKey([]byte(key)); err != nil {
					return usagef("--ssh-pubkey is not an OpenSSH public key (%v); pass the key text or file:PATH of a .pub file", err)
				}
			} else if key, err = throwawayKey(); err != nil {
				return err
			}
			if timeout <= 0 {
				return usagef("--timeout must be positive")
			}
			logger := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: slog.LevelWarn}))
			prov, err := all.Registry().New(cfg.Provisioner, provisioners.Deps{Logger: logger, Config: cfg})
			if err != nil {
				return withExit(exitConfig, err)
			}
			if c, ok := prov.(provisioners.Closer); ok {
				defer c.Close()
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			out := cmd.OutOrStdout()
			if asJSON {
				out = io.Discard
			}
			rep := runTestProvision(ctx, prov, out, testProvisionInput{
				key: key, keep: keep, cores: cores, memoryMB: memoryMB, storageGB: storageGB,
			})
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				if err := enc.Encode(rep); err != nil {
					return err
				}
			}
			if !rep.OK {
				if asJSON {
					return withExit(exitFailure, nil)
				}
				return errors.New("test-provision failed: " + rep.Error)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&pubkeyArg, "ssh-pubkey", "", "SSH public key for the test instance: the key text, file:PATH, or - for stdin")
	f.BoolVar(&keep, "keep", false, "keep the test instance instead of terminating it")
	f.BoolVar(&asJSON, "json", false, "print one JSON report instead of the step log")
	f.IntVar(&cores, "cores", 1, "CPU cores of the test instance")
	f.Int64Var(&memoryMB, "memory-mb", 1024, "memory of the test instance in MiB")
	f.Int64Var(&storageGB, "storage-gb", 0, "disk size in GiB (0: the template's)")
	f.DurationVar(&timeout, "timeout", 20*time.Minute, "give up after this long")
	bindEnv(f)
	return cmd
}

type testProvisionInput struct {
	key                 string
	keep                bool
	cores               int
	memoryMB, storageGB int64
}

// runTestProvision provisions, checks and terminates one test instance,
// printing each step with its timing to out.
func runTestProvision(ctx context.Context, prov provisioners.Provisioner, out io.Writer, in testProvisionInput) *testReport {
	start := time.Now()
	cid := randomContractID()
	rep := &testReport{Provisioner: prov.Type(), ContractID: cid, Kept: in.keep}
	feats := prov.Features()
	fmt.Fprintf(out, "test-provision with the %s provisioner (test contract %s…)\n", prov.Type(), cid[:12])
	if feats.Manual {
		fmt.Fprintln(out, "the manual provisioner creates nothing by itself; there is nothing to test")
		rep.OK = true
		return rep
	}
	last, lastName := start, ""
	closeStep := func(errText string) {
		if lastName == "" {
			return
		}
		d := time.Since(last)
		rep.Steps = append(rep.Steps, testStep{Step: lastName, Seconds: round2(d.Seconds()), Error: errText})
		mark := "ok"
		if errText != "" {
			mark = "FAILED"
		}
		fmt.Fprintf(out, "  %-6s %6.1fs  %s\n", mark, d.Seconds(), lastName)
		lastName = ""
	}
	step := func(name string) {
		closeStep("")
		last, lastName = time.Now(), name
	}
	fail := func(err error) *testReport {
		closeStep(err.Error())
		rep.Error = err.Error()
		rep.Seconds = round2(time.Since(start).Seconds())
		fmt.Fprintf(out, "FAILED after %.1fs: %v\n", time.Since(start).Seconds(), err)
		return rep
	}

	// "provision" stands for the whole call until the backend reports its
	// own steps.
	step("provision")
	placeholder := true
	inst, err := prov.Provision(ctx, provisioners.Request{
		ContractID: cid, OfferingID: "test-provision", CPUCores: in.cores, MemoryMB: in.memoryMB,
		StorageGB: in.storageGB, RequesterSSHPubkey: in.key, Config: map[string]any{},
		Progress: func(s string) {
			if placeholder {
				placeholder = false
				last, lastName = time.Now(), s
				return
			}
			step(s)
		},
	})
	if err != nil {
		return fail(err)
	}
	closeStep("")
	rep.Instance = &testInstance{ExternalID: inst.ExternalID, Name: inst.Name, IPAddress: inst.IPAddress,
		IPv6Address: inst.IPv6Address, SSHPort: inst.SSHPort}
	addr := strings.TrimSpace(inst.IPAddress + " " + inst.IPv6Address)
	fmt.Fprintf(out, "provisioned %s (%s) in %.1fs, address %s\n", inst.ExternalID, inst.Name, time.Since(start).Seconds(), addr)

	// Whatever happens next, do not leave the instance behind unless asked.
	terminate := func() error {
		if in.keep || !feats.Terminate {
			return nil
		}
		tctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Minute)
		defer cancel()
		step("terminate")
		if err := prov.Terminate(tctx, inst.ExternalID); err != nil {
			return fmt.Errorf("terminate %s: %w", inst.ExternalID, err)
		}
		closeStep("")
		rep.Terminated = true
		return nil
	}
	if feats.Health {
		step("health check")
		h, err := prov.HealthCheck(ctx, inst.ExternalID)
		if err == nil && h.Status != provisioners.Healthy {
			err = fmt.Errorf("instance is %s: %s", h.Status, h.Reason)
		}
		if err != nil {
			r := fail(fmt.Errorf("health check: %w", err))
			if terr := terminate(); terr != nil {
				r.Error += "; " + terr.Error()
			}
			return r
		}
		closeStep("")
		rep.Health = &h
		lat := ""
		if h.LatencyMs != nil {
			lat = fmt.Sprintf(", SSH port answers in %d ms", *h.LatencyMs)
		}
		fmt.Fprintf(out, "health: %s (uptime %ds%s)\n", h.Status, h.UptimeSeconds, lat)
	}
	if err := terminate(); err != nil {
		return fail(err)
	}
	switch {
	case in.keep:
		fmt.Fprintf(out, "kept %s; remove it with your provider tools or terminate it later\n", inst.ExternalID)
	case !feats.Terminate:
		fmt.Fprintf(out, "the %s provisioner cannot terminate; remove %s yourself\n", prov.Type(), inst.ExternalID)
	default:
		fmt.Fprintf(out, "terminated %s\n", inst.ExternalID)
	}
	rep.OK = true
	rep.Seconds = round2(time.Since(start).Seconds())
	fmt.Fprintf(out, "test-provision passed in %.1fs\n", time.Since(start).Seconds())
	return rep
}

func round2(f float64) float64 { return float64(int64(f*100+0.5)) / 100 }

// randomContractID is a 64-hex id like a real contract's, so backends
// name the test instance exactly as a real one.
func randomContractID() string {
	var b [32]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// throwawayKey is the public half of a key nobody keeps.
func throwawayKey() (string, error) {
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return "", err
	}
	k, err := ssh.NewPublicKey(pub)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(k))) + " dc-agent-test-provision", nil
}
