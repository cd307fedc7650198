// Package pvecli simulates the command line tools of a Proxmox VE node —
// qm, pveum, pvesh, pvesm, pveversion — libguestfs' virt-customize, and
// iproute2's ip and procps' sysctl for the node's network, Caddy and
// systemctl for the gateway's Caddy (caddy.go), on
// top of the shared simulated cluster state (internal/sim/pve). One
// multi-call binary (cmd/pve-host-sim) is installed as symlinks in a bin
// directory that a test sshd session has on its PATH, so `dc-agent setup
// proxmox` runs the very commands it runs on a real node, over real SSH.
//
// The tools act as root@pam on the node named by $PVE_SIM_NODE (default:
// the first node) of the state in $PVE_SIM_STATE. They print what the real
// tools print (JSON with --output-format json), reject what they reject
// (unknown options and privileges, bad parameters, locked or running VMs)
// with PVE's messages and exit status 255, and finish their tasks before
// returning, as the real tools do.
//
// Failures are injected through host-faults.json in the state dir (see
// Faults): a command can be made to fail or to hang until its SSH session
// is gone, which is how tests interrupt a setup mid-template.
package pvecli

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/decent-stuff/dc-agent/internal/sim/pve"
)

// Tools are the command names the binary answers to.
var Tools = []string{"qm", "pveum", "pvesh", "pvesm", "pveversion", "virt-customize", "ip", "sysctl", "caddy", "systemctl"}

// Environment variables the tools read.
const (
	EnvState = "PVE_SIM_STATE"
	EnvNode  = "PVE_SIM_NODE"
)

// exitErr is PVE's exit status for a failed command (a Perl die).
const exitErr = 255

// Env is what one invocation runs with.
type Env struct {
	Stdout, Stderr io.Writer
	Stdin          io.Reader
	// StateDir is the simulated cluster's state directory.
	StateDir string
	// Node is the node the tools run on ("" = the first one).
	Node string
}

// Main runs one tool invocation: argv[0]'s base name picks the tool
// (pve-host-sim TOOL ARGS... also works). It returns the exit status.
func Main(argv []string, env Env) int {
	if len(argv) == 0 {
		fmt.Fprintln(env.Stderr, "pve-host-sim: no command")
		return 2
	}
	tool := filepath.Base(argv[0])
	args := argv[1:]
	if !isTool(tool) {
		if len(args) == 0 || !isTool(args[0]) {
			fmt.Fprintf(env.Stderr, "usage: pve-host-sim {%s} ARGS... (or call it through a symlink of that name)\n", strings.Join(Tools, "|"))
			return 2
		}
		tool, args = args[0], args[1:]
	}
	if env.StateDir == "" {
		fmt.Fprintf(env.Stderr, "%s: %s is not set (the simulated node's state directory)\n", tool, EnvState)
		return exitErr
	}
	store, err := pve.Open(env.StateDir)
	if err != nil {
		fmt.Fprintf(env.Stderr, "%s: %v\n", tool, err)
		return exitErr
	}
	c := &cli{env: env, store: store, tool: tool, argv: args}
	if code, handled := c.injectFault(); handled {
		return code
	}
	if c.env.Node == "" {
		_ = store.View(func(st *pve.State) error {
			if names := st.NodeNames(); len(names) > 0 {
				c.env.Node = names[0]
			}
			return nil
		})
	}
	switch tool {
	case "qm":
		return c.qm(args)
	case "pveum":
		return c.pveum(args)
	case "pvesh":
		return c.pvesh(args)
	case "pvesm":
		return c.pvesm(args)
	case "pveversion":
		return c.pveversion(args)
	case "virt-customize":
		return c.virtCustomize(args)
	case "ip":
		return c.ip(args)
	case "sysctl":
		return c.sysctl(args)
	case "caddy":
		return c.caddy(args)
	case "systemctl":
		return c.systemctl(args)
	}
	return 2
}

func isTool(name string) bool {
	for _, t := range Tools {
		if t == name {
			return true
		}
	}
	return false
}

// Install creates one symlink per tool in dir, pointing at binary.
func Install(dir, binary string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, t := range Tools {
		p := filepath.Join(dir, t)
		_ = os.Remove(p)
		if err := os.Symlink(binary, p); err != nil {
			return fmt.Errorf("install %s: %w", t, err)
		}
	}
	return nil
}

type cli struct {
	env   Env
	store *pve.Store
	tool  string
	argv  []string
}

func (c *cli) out(format string, a ...any) { fmt.Fprintf(c.env.Stdout, format, a...) }

// fail prints err as the PVE tools do and returns their exit status.
func (c *cli) fail(err error, usage string) int {
	var pe *pve.Error
	if errors.As(err, &pe) && len(pe.Params) > 0 {
		fmt.Fprintf(c.env.Stderr, "400 %s\n", pe.Msg)
		keys := make([]string, 0, len(pe.Params))
		for k := range pe.Params {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Fprintf(c.env.Stderr, "%s: %s\n", k, pe.Params[k])
		}
		if usage != "" {
			fmt.Fprintln(c.env.Stderr, usage)
		}
		return exitErr
	}
	msg := err.Error()
	if !strings.HasSuffix(msg, "\n") {
		msg += "\n"
	}
	fmt.Fprint(c.env.Stderr, msg)
	return exitErr
}

// usageErr is a command line the tool's option parser refuses.
type usageErr struct{ msg string }

func (e usageErr) Error() string { return e.msg }

// failUsage prints an option parsing error like PVE's CLIHandler.
func (c *cli) failUsage(err error, usage string) int {
	fmt.Fprintf(c.env.Stderr, "%s\n400 unable to parse option\n%s\n", err, usage)
	return exitErr
}

// args is a parsed PVE-style command line: positional arguments, then
// --key value (or -key value, --key=value) options.
type args struct {
	pos  []string
	opts map[string]string
}

func (a args) has(k string) bool { _, ok := a.opts[k]; return ok }

// parseArgs parses argv. bools are options that may stand alone; every
// other option needs a value. known (if non-nil) limits the options.
func parseArgs(argv []string, bools map[string]bool, known map[string]bool) (args, error) {
	a := args{opts: map[string]string{}}
	for i := 0; i < len(argv); i++ {
		tok := argv[i]
		if !strings.HasPrefix(tok, "-") || len(tok) < 2 || isNumber(tok) {
			a.pos = append(a.pos, tok)
			continue
		}
		name := strings.TrimLeft(tok, "-")
		val, hasVal := "", false
		if k, v, ok := strings.Cut(name, "="); ok {
			name, val, hasVal = k, v, true
		}
		if known != nil && !known[name] && !bools[name] {
			return a, usageErr{fmt.Sprintf("Unknown option: %s", name)}
		}
		if !hasVal {
			if bools[name] {
				val = "1"
				if i+1 < len(argv) && isBoolWord(argv[i+1]) {
					i++
					val = argv[i]
				}
			} else {
				if i+1 >= len(argv) {
					return a, usageErr{fmt.Sprintf("Option %s requires an argument", name)}
				}
				i++
				val = argv[i]
			}
		}
		a.opts[name] = val
	}
	return a, nil
}

func isNumber(s string) bool { _, err := strconv.ParseFloat(s, 64); return err == nil }

func isBoolWord(s string) bool {
	switch strings.ToLower(s) {
	case "0", "1", "yes", "no", "true", "false", "on", "off":
		return true
	}
	return false
}

func boolOpt(a args, k string) bool {
	switch strings.ToLower(a.opts[k]) {
	case "1", "yes", "true", "on":
		return true
	}
	return false
}

// printData renders an API result for --output-format (json,
// json-pretty, text, yaml treated as text).
func (c *cli) printData(format string, v any) int {
	switch format {
	case "json":
		b, err := json.Marshal(v)
		if err != nil {
			return c.fail(err, "")
		}
		c.out("%s\n", b)
	case "json-pretty":
		b, err := json.MarshalIndent(v, "", "   ")
		if err != nil {
			return c.fail(err, "")
		}
		c.out("%s\n", b)
	case "", "text", "yaml":
		c.printText(v)
	default:
		return c.fail(pve.ParamError(map[string]string{"output-format": fmt.Sprintf("value '%s' does not have a value in the enumeration 'text, json, json-pretty, yaml'", format)}), "")
	}
	return 0
}

// printText is the plain rendering: key: value lines, or one line per
// entry of a list.
func (c *cli) printText(v any) {
	switch t := v.(type) {
	case []map[string]any:
		for _, m := range t {
			c.out("%s\n", flat(m))
		}
	case map[string]any:
		keys := make([]string, 0, len(t))
		for k := range t {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			c.out("%s: %v\n", k, t[k])
		}
	default:
		c.out("%v\n", t)
	}
}

func flat(m map[string]any) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s=%v", k, m[k]))
	}
	return strings.Join(parts, " ")
}

// runTask runs a state operation that starts a task, finishes it and
// turns a failed exit status into an error (the CLI tools wait for their
// workers).
func (c *cli) runTask(op func(st *pve.State) (string, error)) error {
	exit, err := c.store.RunTask(op)
	if err != nil {
		return err
	}
	if exit != "OK" {
		return errors.New(exit)
	}
	return nil
}
