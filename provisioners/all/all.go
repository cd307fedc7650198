// Package all builds the registry of every provisioner compiled into
// dc-agent. Commands ask it for the registry; the agent loop only ever sees
// the registry, never a backend package.
package all

import (
	"github.com/decent-stuff/dc-agent/provisioners"
	"github.com/decent-stuff/dc-agent/provisioners/digitalocean"
	"github.com/decent-stuff/dc-agent/provisioners/docker"
	"github.com/decent-stuff/dc-agent/provisioners/hetzner"
	"github.com/decent-stuff/dc-agent/provisioners/manual"
	"github.com/decent-stuff/dc-agent/provisioners/proxmox"
	"github.com/decent-stuff/dc-agent/provisioners/script"
	"github.com/decent-stuff/dc-agent/provisioners/vultr"
)

// Registry returns a registry with every built-in provisioner.
func Registry() *provisioners.Registry {
	r := provisioners.NewRegistry()
	script.Register(r)
	manual.Register(r)
	proxmox.Register(r)
	hetzner.Register(r)
	digitalocean.Register(r)
	vultr.Register(r)
	docker.Register(r)
	return r
}
