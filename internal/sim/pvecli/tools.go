package pvecli

import (
	"fmt"
	"os"
	"strings"

	"github.com/decent-stuff/dc-agent/internal/sim/pve"
)

func (c *cli) pveversion(argv []string) int {
	a, err := parseArgs(argv, map[string]bool{"verbose": true, "v": true}, map[string]bool{})
	if err != nil {
		return c.failUsage(err, "pveversion [--verbose]")
	}
	var line, ver, kernel string
	_ = c.store.View(func(st *pve.State) error {
		line, ver, kernel = st.PVEVersionLine(), st.Version, st.Kernel
		return nil
	})
	if a.has("verbose") || a.has("v") {
		maj := strings.SplitN(ver, ".", 2)[0]
		c.out("proxmox-ve: %s.0 (running kernel: %s)\n", maj, kernel)
		c.out("pve-manager: %s (running version: %s)\n", ver, strings.TrimPrefix(strings.SplitN(line, " ", 2)[0], "pve-manager/"))
		c.out("qemu-server: %s.0\npve-qemu-kvm: 9.2.0-5\n", maj)
		return 0
	}
	c.out("%s\n", line)
	return 0
}

func (c *cli) pvesm(argv []string) int {
	const usage = "USAGE: pvesm <COMMAND> [ARGS] [OPTIONS]"
	if len(argv) == 0 {
		fmt.Fprintf(c.env.Stderr, "ERROR: no command specified\n%s\n", usage)
		return exitErr
	}
	switch argv[0] {
	case "status":
		a, err := parseArgs(argv[1:], map[string]bool{"enabled": true}, map[string]bool{"content": true, "storage": true, "target": true, "format": true})
		if err != nil {
			return c.failUsage(err, "pvesm status [OPTIONS]")
		}
		var rows []map[string]any
		if err := c.store.View(func(st *pve.State) error {
			all, err := st.NodeStorages(pve.Root, c.env.Node)
			if err != nil {
				return err
			}
			for _, s := range all {
				if sid := a.opts["storage"]; sid != "" && s["storage"] != sid {
					continue
				}
				if ct := a.opts["content"]; ct != "" && !strings.Contains(","+s["content"].(string)+",", ","+ct+",") {
					continue
				}
				rows = append(rows, s)
			}
			return nil
		}); err != nil {
			return c.fail(err, "")
		}
		c.out("%-16s %8s %8s %15s %15s %15s %8s\n", "Name", "Type", "Status", "Total", "Used", "Available", "%")
		for _, s := range rows {
			total, used, avail := s["total"].(int64), s["used"].(int64), s["avail"].(int64)
			pct := 0.0
			if total > 0 {
				pct = float64(used) * 100 / float64(total)
			}
			c.out("%-16s %8s %8s %15d %15d %15d %7.2f%%\n", s["storage"], s["type"], "active", total>>10, used>>10, avail>>10, pct)
		}
		return 0
	case "path":
		if len(argv) != 2 {
			fmt.Fprintf(c.env.Stderr, "400 not enough arguments\npvesm path <volume>\n")
			return exitErr
		}
		var p string
		if err := c.store.View(func(st *pve.State) error {
			v := st.Volumes[argv[1]]
			if v == nil {
				return pve.Fail("unable to parse volume ID '%s'", argv[1])
			}
			s := st.Storages[v.Storage]
			switch {
			case s != nil && s.Path != "":
				p = s.Path + "/images/" + v.Name
			case s != nil && s.VGName != "":
				p = "/dev/" + s.VGName + "/" + v.Name
			default:
				p = "/dev/zvol/" + v.Name
			}
			return nil
		}); err != nil {
			return c.fail(err, "")
		}
		c.out("%s\n", p)
		return 0
	}
	fmt.Fprintf(c.env.Stderr, "unknown command 'pvesm %s'\n%s\n", argv[0], usage)
	return exitErr
}

// customizeMarker starts each line virt-customize (simulated) appends to
// an image it changed, so a later import knows what the image holds.
const customizeMarker = "#virt-customize-sim: "

// virtCustomize changes a disk image in place. It understands the
// operations a cloud template needs and refuses what it does not know,
// like the real tool refuses unknown options.
func (c *cli) virtCustomize(argv []string) int {
	var file string
	var ops []string
	quiet := false
	for i := 0; i < len(argv); i++ {
		opt := argv[i]
		val := func() (string, bool) {
			if k, v, ok := strings.Cut(opt, "="); ok && strings.HasPrefix(k, "--") {
				opt = k
				return v, true
			}
			if i+1 >= len(argv) {
				return "", false
			}
			i++
			return argv[i], true
		}
		name := opt
		if k, _, ok := strings.Cut(opt, "="); ok {
			name = k
		}
		switch name {
		case "-q", "--quiet":
			quiet = true
		case "-v", "-x", "--verbose", "--no-network", "--network", "--selinux-relabel", "--no-selinux-relabel":
		case "-a", "--add":
			v, ok := val()
			if !ok {
				return c.vcError("option requires an argument -- 'a'")
			}
			file = v
		case "--install", "--truncate", "--run-command", "--delete", "--uninstall", "--timezone", "--hostname", "--mkdir", "--touch":
			v, ok := val()
			if !ok {
				return c.vcError("option '" + name + "' requires an argument")
			}
			ops = append(ops, strings.TrimPrefix(name, "--")+" "+v)
		default:
			return c.vcError(fmt.Sprintf("unrecognized option '%s'", opt))
		}
	}
	if file == "" {
		return c.vcError("you must give at least one -a or -d option.  Read virt-customize(1) man page for further information.")
	}
	st, err := os.Stat(file)
	if err != nil {
		return c.vcError(fmt.Sprintf("libguestfs error: could not create appliance through libvirt.\nOriginal error from libvirt: Cannot access storage file '%s': No such file or directory", file))
	}
	if st.Size() < 512 {
		return c.vcError("no operating systems were found in the guest image")
	}
	step := func(t float64, msg string) {
		if !quiet {
			c.out("[%6.1f] %s\n", t, msg)
		}
	}
	step(0.0, "Examining the guest ...")
	step(6.4, "Setting a random seed")
	t := 6.5
	var marks strings.Builder
	for _, op := range ops {
		verb, arg, _ := strings.Cut(op, " ")
		switch verb {
		case "install":
			step(t, "Installing packages: "+strings.ReplaceAll(arg, ",", " "))
			for _, p := range strings.Split(arg, ",") {
				marks.WriteString(customizeMarker + "install " + strings.TrimSpace(p) + "\n")
			}
			t += 14
		case "truncate":
			step(t, "Truncating: "+arg)
			marks.WriteString(customizeMarker + op + "\n")
		case "run-command":
			step(t, "Running: "+arg)
			marks.WriteString(customizeMarker + op + "\n")
		default:
			step(t, strings.ToUpper(verb[:1])+verb[1:]+": "+arg)
			marks.WriteString(customizeMarker + op + "\n")
		}
		t += 0.1
	}
	step(t, "Finishing off")
	f, err := os.OpenFile(file, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return c.vcError(err.Error())
	}
	defer f.Close()
	if _, err := f.WriteString("\n" + marks.String()); err != nil {
		return c.vcError(err.Error())
	}
	return 0
}

func (c *cli) vcError(msg string) int {
	fmt.Fprintf(c.env.Stderr, "virt-customize: error: %s\n", msg)
	return 1
}
