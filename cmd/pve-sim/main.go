// Command pve-sim runs the simulated Proxmox VE API on its own, for
// providers evaluating dc-agent without a Proxmox host and for tooling:
//
//	go run ./cmd/pve-sim --listen 127.0.0.1:8006 [--state DIR] [--node pve1] [--pve-version 9.1]
//	go run ./cmd/pve-sim --nodes 3 [--template-storage ceph-vm | --node-templates] ...
//	go run ./cmd/pve-sim node offline|online|maintenance|active NODE --state DIR
//
// It serves HTTPS under /api2/json with the node's self-signed certificate
// and prints one JSON line {"url","token_id","token_secret","fingerprint",
// "node","nodes"} on stdout (nodes: "pve1,pve2,..."). A new state starts with one node, storage
// local-lvm, bridge vmbr0, the cloud-init template VM 9000 and a
// least-privilege API token. With --nodes N it is a cluster pve1..pveN
// (the API runs on pve1) with the shared RBD storage ceph-vm, which holds
// the template; with --node-templates it is on local-lvm of pve1 instead,
// copied to every node (9001 on pve2, ...). The node
// command changes a running simulator's state: offline takes the node out
// of the cluster (--power-loss: its tasks die and its guests stop) until
// online brings it back. The state directory is shared with the
// simulated host CLI tools.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/decent-stuff/dc-agent/internal/sim/pve"
	"github.com/decent-stuff/dc-agent/internal/sim/pveapi"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "pve-sim:", err)
		os.Exit(1)
	}
}

// versionFlag turns "9.1" into a full pve-manager version.
func versionFlag(v string) (string, error) {
	parts := strings.Split(v, ".")
	if len(parts) < 2 || len(parts) > 3 || (parts[0] != "8" && parts[0] != "9") {
		return "", fmt.Errorf("--pve-version %q: use 8.x or 9.x (e.g. 9.1)", v)
	}
	if len(parts) == 2 {
		v += ".1"
	}
	return v, nil
}

// run serves until ctx ends, after printing the JSON line to out.
func run(ctx context.Context, args []string, out io.Writer) error {
	if len(args) > 0 && args[0] == "node" {
		return nodeCommand(args[1:], out)
	}
	fs := flag.NewFlagSet("pve-sim", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:8006", "address to serve HTTPS on")
	stateDir := fs.String("state", "", "state directory shared with the simulated host tools (default: a temporary one, removed on exit)")
	node := fs.String("node", "pve1", "node name")
	version := fs.String("pve-version", "9.1", "Proxmox VE version to simulate (8.x or 9.x)")
	timing := fs.String("timing", "demo", "task timing for a new state: demo (seconds, like a small host) or fast (milliseconds)")
	verbose := fs.Bool("v", false, "log every request to stderr")
	nodes := fs.Int("nodes", 1, "cluster size for a new state: nodes pve1..pveN with a shared storage "+pve.SharedStorageID+" (the API runs on pve1)")
	tplStorage := fs.String("template-storage", "", "storage of the template 9000 in a new state (default local-lvm; "+pve.SharedStorageID+" in a cluster without --node-templates)")
	nodeTemplates := fs.Bool("node-templates", false, "copy the template to every node of a new cluster (9001 on pve2, ...)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	ver, err := versionFlag(*version)
	if err != nil {
		return err
	}
	var tm pve.Timing
	switch *timing {
	case "demo":
		tm = pve.DemoTiming()
	case "fast":
		tm = pve.FastTiming()
	default:
		return fmt.Errorf("--timing %q: use demo or fast", *timing)
	}
	dir := *stateDir
	if dir == "" {
		dir, err = os.MkdirTemp("", "pve-sim-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
	}
	if *nodes < 1 || *nodes > 64 {
		return fmt.Errorf("--nodes %d: use 1..64", *nodes)
	}
	if *nodes > 1 && *node != "pve1" {
		return errors.New("--node: a simulated cluster's nodes are pve1..pveN; leave --node out with --nodes")
	}
	if *tplStorage == "" && *nodes > 1 && !*nodeTemplates {
		*tplStorage = pve.SharedStorageID // every node can clone it
	}
	store, err := pve.OpenOrCreate(dir, pve.InitOptions{Node: *node, Version: ver, Template: 9000, AgentToken: true, Timing: &tm,
		Nodes: *nodes, SharedStorage: *nodes > 1, TemplateStorage: *tplStorage, NodeTemplates: *nodeTemplates})
	if err != nil {
		return err
	}
	var names []string
	if err := store.View(func(st *pve.State) error { names = st.NodeNames(); return nil }); err != nil {
		return err
	}
	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	sim, err := pveapi.Start(store, *node, *listen, log)
	if err != nil {
		return err
	}
	defer sim.Close()
	var secret string
	if err := store.View(func(st *pve.State) error {
		secret, _ = st.TokenSecret(pve.AgentTokenID)
		return nil
	}); err != nil {
		return err
	}
	tokenID := pve.AgentTokenID
	if secret == "" {
		tokenID = ""
		log.Warn("the state has no " + pve.AgentTokenID + " token; create one with the simulated pveum")
	}
	line, err := json.Marshal(map[string]string{
		"url": sim.URL, "token_id": tokenID, "token_secret": secret, "fingerprint": sim.Fingerprint, "node": *node,
		"nodes": strings.Join(names, ","),
	})
	if err != nil {
		return err
	}
	fmt.Fprintln(out, string(line))
	<-ctx.Done()
	if err := sim.Close(); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return nil
}

// nodeCommand changes a node of a simulator's state:
// node offline|online|maintenance|active NODE --state DIR [--power-loss].
func nodeCommand(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("pve-sim node", flag.ContinueOnError)
	stateDir := fs.String("state", "", "the simulator's state directory")
	powerLoss := fs.Bool("power-loss", false, "offline: the node loses power (its tasks die, its guests stop; onboot guests start when it is back)")
	usage := "usage: pve-sim node offline|online|maintenance|active NODE --state DIR [--power-loss]"
	if len(args) < 2 {
		return errors.New(usage)
	}
	verb, name := args[0], args[1]
	if err := fs.Parse(args[2:]); err != nil {
		return err
	}
	if *stateDir == "" || fs.NArg() > 0 {
		return errors.New(usage)
	}
	store, err := pve.Open(*stateDir)
	if err != nil {
		return err
	}
	err = store.Update(func(st *pve.State) error {
		switch verb {
		case "offline":
			return st.SetNodeOffline(name, *powerLoss)
		case "online":
			return st.SetNodeOnline(name)
		case "maintenance":
			return st.SetNodeMaintenance(name, true)
		case "active":
			return st.SetNodeMaintenance(name, false)
		}
		return fmt.Errorf("unknown node command %q; %s", verb, usage)
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "node %s: %s\n", name, verb)
	return nil
}
