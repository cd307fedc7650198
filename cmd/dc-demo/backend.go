package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/decent-stuff/dc-agent/config"
	"github.com/decent-stuff/dc-agent/internal/demobackend"
)

// Backend is where the demo's agent makes machines. Add one by writing a
// type with these methods and an entry in backends; DEMO_BACKEND picks it.
type Backend interface {
	// Start prepares the backend under dir (the demo's scratch directory)
	// and returns the agent's [provisioner] section for it.
	Start(ctx context.Context, dir string) (config.ProvisionerConfig, error)
	// Describe says in one line what the backend is, for the banner.
	Describe() string
	// Instances lists the machines the backend runs now, one line each.
	Instances() []string
	// Stop releases what Start started.
	Stop()
}

// backends maps DEMO_BACKEND values to constructors.
var backends = map[string]func() Backend{
	"script":  func() Backend { return &scriptBackend{} },
	"proxmox": func() Backend { return &proxmoxBackend{} },
}

// defaultBackend is used when DEMO_BACKEND is unset: the real Proxmox
// provisioner against the simulated node.
const defaultBackend = "proxmox"

// scriptBackend runs the agent's script provisioner against the demo
// machine pool (internal/demobackend): this very binary, called through a
// wrapper script, keeps pretend machines as files.
type scriptBackend struct {
	pool *demobackend.Backend
}

func (b *scriptBackend) Start(ctx context.Context, dir string) (config.ProvisionerConfig, error) {
	exe, err := os.Executable()
	if err != nil {
		return config.ProvisionerConfig{}, fmt.Errorf("find the demo binary: %w", err)
	}
	b.pool = &demobackend.Backend{Dir: filepath.Join(dir, "pool")}
	if err := os.MkdirAll(b.pool.Dir, 0o755); err != nil {
		return config.ProvisionerConfig{}, err
	}
	// Long enough to watch a machine being made, short enough not to bore.
	if err := b.pool.Set("delay", "1500ms"); err != nil {
		return config.ProvisionerConfig{}, err
	}
	wrapper := filepath.Join(dir, "provisioner.sh")
	if err := demobackend.WriteWrapper(wrapper, exe, b.pool.Dir); err != nil {
		return config.ProvisionerConfig{}, err
	}
	return config.ProvisionerConfig{Type: config.TypeScript, Script: &config.ScriptConfig{
		Provision: wrapper, Terminate: wrapper, HealthCheck: wrapper, GetInstance: wrapper, List: wrapper, Pause: wrapper, Resume: wrapper, TimeoutSeconds: 60,
	}}, nil
}

func (b *scriptBackend) Describe() string {
	return "script provisioner → demo machine pool in " + b.pool.Dir
}

func (b *scriptBackend) Instances() []string {
	var out []string
	for _, inst := range b.pool.Instances() {
		out = append(out, fmt.Sprintf("%s  %s  %s", inst.ExternalID, inst.IPAddress, inst.Name[:15]+"…"))
	}
	return out
}

func (b *scriptBackend) Stop() {}
