package pvecli

import (
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"

	"github.com/decent-stuff/dc-agent/internal/sim/pve"
)

const qmUsage = "USAGE: qm <COMMAND> [ARGS] [OPTIONS]"

func (c *cli) qm(argv []string) int {
	if len(argv) == 0 {
		fmt.Fprintf(c.env.Stderr, "ERROR: no command specified\n%s\n", qmUsage)
		return exitErr
	}
	cmd, rest := argv[0], argv[1:]
	if cmd == "disk" && len(rest) > 0 && rest[0] == "import" {
		cmd, rest = "importdisk", rest[1:]
	}
	switch cmd {
	case "create":
		return c.qmCreate(rest)
	case "set":
		return c.qmSet(rest)
	case "config":
		return c.qmConfig(rest)
	case "list":
		return c.qmList(rest)
	case "status":
		return c.qmStatus(rest)
	case "destroy":
		return c.qmDestroy(rest)
	case "template":
		return c.qmTemplate(rest)
	case "importdisk":
		return c.qmImportDisk(rest)
	case "start", "stop", "shutdown":
		return c.qmPower(cmd, rest)
	case "clone":
		return c.qmClone(rest)
	case "resize":
		return c.qmResize(rest)
	case "migrate":
		return c.qmMigrate(rest)
	case "help":
		c.out("%s\n", qmUsage)
		return 0
	}
	fmt.Fprintf(c.env.Stderr, "unknown command 'qm %s'\n%s\n", cmd, qmUsage)
	return exitErr
}

// vmidArg parses the leading VMID argument.
func vmidArg(a args, usage string) (int, error) {
	if len(a.pos) == 0 {
		return 0, usageErr{"400 not enough arguments\n" + usage}
	}
	n, err := strconv.Atoi(a.pos[0])
	if err != nil {
		return 0, pve.ParamError(map[string]string{"vmid": fmt.Sprintf("type check ('integer') failed - got '%s'", a.pos[0])})
	}
	if n < 100 || n > 999999999 {
		return 0, pve.ParamError(map[string]string{"vmid": "value must have a minimum value of 100"})
	}
	return n, nil
}

// withVMID parses argv and the VMID, printing errors the tool's way.
func (c *cli) withVMID(argv []string, usage string, bools map[string]bool, known map[string]bool) (args, int, int) {
	a, err := parseArgs(argv, bools, known)
	if err != nil {
		return a, 0, c.failUsage(err, usage)
	}
	id, err := vmidArg(a, usage)
	if err != nil {
		if ue, ok := err.(usageErr); ok {
			fmt.Fprintln(c.env.Stderr, ue.msg)
			return a, 0, exitErr
		}
		return a, 0, c.fail(err, usage)
	}
	return a, id, -1
}

func (c *cli) qmCreate(argv []string) int {
	const usage = "qm create <vmid> [OPTIONS]"
	a, id, code := c.withVMID(argv, usage, nil, nil)
	if code >= 0 {
		return code
	}
	params := a.opts
	if err := c.runTask(func(st *pve.State) (string, error) { return st.CreateVM(pve.Root, c.env.Node, id, params) }); err != nil {
		return c.fail(err, usage)
	}
	return 0
}

func (c *cli) qmSet(argv []string) int {
	const usage = "qm set <vmid> [OPTIONS]"
	a, id, code := c.withVMID(argv, usage, map[string]bool{"skiplock": true, "force": true}, nil)
	if code >= 0 {
		return code
	}
	var keys []string
	for k := range a.opts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var shown []string
	for _, k := range keys {
		shown = append(shown, "-"+k+" "+a.opts[k])
	}
	c.out("update VM %d: %s\n", id, strings.Join(shown, " "))
	imports := map[string]string{}
	for k, v := range a.opts {
		if d, err := pve.ParseDrive(v); err == nil && pve.IsDriveKey(k) && d.Opts["import-from"] != "" {
			imports[k] = d.Opts["import-from"]
		}
	}
	before := map[string]string{}
	err := c.store.Update(func(st *pve.State) error {
		vm, err := st.VMOn(c.env.Node, id)
		if err != nil {
			return err
		}
		for k, v := range vm.Config {
			before[k] = v
		}
		if _, err := st.SetConfig(pve.Root, c.env.Node, id, a.opts, false); err != nil {
			return err
		}
		// New disks: report them, and remember what an imported one came from.
		for _, k := range keys {
			if !pve.IsDriveKey(k) || vm.Config[k] == before[k] {
				continue
			}
			d, err := pve.ParseDrive(vm.Config[k])
			if err != nil || d.IsCDROM() && !d.IsCloudinit() {
				continue
			}
			if src, ok := imports[k]; ok {
				if vol := st.Volumes[d.File]; vol != nil {
					vol.Origin = &pve.ImageOrigin{File: src, Customizations: readCustomizations(src)}
				}
				size := renderBytes(volSize(st, d.File))
				c.out("transferred 0.0 B of %s (0.00%%)\ntransferred %s of %s (100.00%%)\n", size, size, size)
			}
			c.out("%s: successfully created disk '%s'\n", k, vm.Config[k])
		}
		return nil
	})
	if err != nil {
		return c.fail(err, usage)
	}
	return 0
}

// renderBytes is PVE's render_bytes ("3.5 GiB").
func renderBytes(n int64) string {
	units := []string{"B", "KiB", "MiB", "GiB", "TiB"}
	f, i := float64(n), 0
	for f >= 1024 && i < len(units)-1 {
		f /= 1024
		i++
	}
	return fmt.Sprintf("%.1f %s", f, units[i])
}

func volSize(st *pve.State, volid string) int64 {
	if v := st.Volumes[volid]; v != nil {
		return v.SizeBytes
	}
	return 0
}

func (c *cli) qmConfig(argv []string) int {
	const usage = "qm config <vmid> [OPTIONS]"
	a, id, code := c.withVMID(argv, usage, map[string]bool{"current": true}, map[string]bool{"snapshot": true})
	if code >= 0 {
		return code
	}
	_ = a
	var text string
	if err := c.store.View(func(st *pve.State) error {
		vm, err := st.VMOn(c.env.Node, id)
		if err != nil {
			return err
		}
		text = pve.ConfigText(vm)
		return nil
	}); err != nil {
		return c.fail(err, usage)
	}
	// qm config shows the description as a key, not as comments.
	for _, l := range strings.Split(strings.TrimSuffix(text, "\n"), "\n") {
		if strings.HasPrefix(l, "#") {
			continue
		}
		c.out("%s\n", l)
	}
	return 0
}

func (c *cli) qmList(argv []string) int {
	if _, err := parseArgs(argv, map[string]bool{"full": true}, map[string]bool{}); err != nil {
		return c.failUsage(err, "qm list [OPTIONS]")
	}
	var rows []string
	if err := c.store.View(func(st *pve.State) error {
		vms, err := st.ListVMs(pve.Root, c.env.Node)
		if err != nil {
			return err
		}
		for _, vm := range vms {
			d := st.VMListData(vm)
			pid := 0
			if p, ok := d["pid"].(int); ok {
				pid = p
			}
			disk := float64(d["maxdisk"].(int64)) / (1 << 30)
			rows = append(rows, fmt.Sprintf("%10d %-20s %-10s %-10d %12.2f %-10d\n", vm.VMID, vm.Name(), vm.Status, pve.VMMemoryMB(vm), disk, pid))
		}
		return nil
	}); err != nil {
		return c.fail(err, "")
	}
	if len(rows) > 0 {
		c.out("%10s %-20s %-10s %-10s %12s %-10s\n", "VMID", "NAME", "STATUS", "MEM(MB)", "BOOTDISK(GB)", "PID")
		for _, r := range rows {
			c.out("%s", r)
		}
	}
	return 0
}

func (c *cli) qmStatus(argv []string) int {
	const usage = "qm status <vmid> [OPTIONS]"
	_, id, code := c.withVMID(argv, usage, map[string]bool{"verbose": true}, map[string]bool{})
	if code >= 0 {
		return code
	}
	var status string
	if err := c.store.View(func(st *pve.State) error {
		vm, err := st.VMOn(c.env.Node, id)
		if err != nil {
			return err
		}
		status = vm.Status
		return nil
	}); err != nil {
		return c.fail(err, usage)
	}
	c.out("status: %s\n", status)
	return 0
}

func (c *cli) qmDestroy(argv []string) int {
	const usage = "qm destroy <vmid> [OPTIONS]"
	bools := map[string]bool{"purge": true, "destroy-unreferenced-disks": true, "skiplock": true}
	a, id, code := c.withVMID(argv, usage, bools, map[string]bool{})
	if code >= 0 {
		return code
	}
	// PVE defaults destroy-unreferenced-disks to 1.
	unref := !a.has("destroy-unreferenced-disks") || boolOpt(a, "destroy-unreferenced-disks")
	var vols []string
	_ = c.store.View(func(st *pve.State) error {
		for id2, v := range st.Volumes {
			if v.VMID == id {
				vols = append(vols, id2)
			}
		}
		return nil
	})
	if err := c.runTask(func(st *pve.State) (string, error) {
		return st.Destroy(pve.Root, c.env.Node, id, boolOpt(a, "purge"), unref, boolOpt(a, "skiplock"))
	}); err != nil {
		return c.fail(err, usage)
	}
	sort.Strings(vols)
	for _, v := range vols {
		_, name, _ := strings.Cut(v, ":")
		c.out("  Logical volume \"%s\" successfully removed.\n", name)
	}
	return 0
}

func (c *cli) qmTemplate(argv []string) int {
	const usage = "qm template <vmid> [OPTIONS]"
	_, id, code := c.withVMID(argv, usage, nil, map[string]bool{"disk": true})
	if code >= 0 {
		return code
	}
	if err := c.runTask(func(st *pve.State) (string, error) { return st.ConvertToTemplate(pve.Root, c.env.Node, id) }); err != nil {
		return c.fail(err, usage)
	}
	return 0
}

func (c *cli) qmImportDisk(argv []string) int {
	const usage = "qm disk import <vmid> <source> <storage> [OPTIONS]"
	a, id, code := c.withVMID(argv, usage, nil, map[string]bool{"format": true, "target-disk": true})
	if code >= 0 {
		return code
	}
	if len(a.pos) < 3 {
		fmt.Fprintf(c.env.Stderr, "400 not enough arguments\n%s\n", usage)
		return exitErr
	}
	file, sid := a.pos[1], a.pos[2]
	c.out("importing disk '%s' to VM %d ...\n", file, id)
	var volid, key string
	err := c.store.Update(func(st *pve.State) error {
		var err error
		if volid, err = st.ImportDisk(pve.Root, c.env.Node, id, file, sid); err != nil {
			return err
		}
		if vol := st.Volumes[volid]; vol != nil {
			vol.Origin = &pve.ImageOrigin{File: file, Customizations: readCustomizations(file)}
		}
		vm, _ := st.VMOn(c.env.Node, id)
		for k, v := range vm.Config {
			if strings.HasPrefix(k, "unused") && v == volid {
				key = k
			}
		}
		return nil
	})
	if err != nil {
		return c.fail(err, usage)
	}
	c.out("Successfully imported disk as '%s:%s'\n", key, volid)
	return 0
}

func (c *cli) qmPower(cmd string, argv []string) int {
	usage := "qm " + cmd + " <vmid> [OPTIONS]"
	_, id, code := c.withVMID(argv, usage, map[string]bool{"skiplock": true}, map[string]bool{"timeout": true})
	if code >= 0 {
		return code
	}
	err := c.runTask(func(st *pve.State) (string, error) {
		switch cmd {
		case "start":
			return st.Start(pve.Root, c.env.Node, id)
		case "stop":
			return st.Stop(pve.Root, c.env.Node, id)
		default:
			return st.Shutdown(pve.Root, c.env.Node, id)
		}
	})
	if err != nil {
		return c.fail(err, usage)
	}
	return 0
}

func (c *cli) qmClone(argv []string) int {
	const usage = "qm clone <vmid> <newid> [OPTIONS]"
	known := map[string]bool{"name": true, "description": true, "pool": true, "storage": true, "format": true, "target": true, "snapname": true}
	a, id, code := c.withVMID(argv, usage, map[string]bool{"full": true}, known)
	if code >= 0 {
		return code
	}
	if len(a.pos) < 2 {
		fmt.Fprintf(c.env.Stderr, "400 not enough arguments\n%s\n", usage)
		return exitErr
	}
	newid, err := strconv.Atoi(a.pos[1])
	if err != nil {
		return c.fail(pve.ParamError(map[string]string{"newid": fmt.Sprintf("type check ('integer') failed - got '%s'", a.pos[1])}), usage)
	}
	p := pve.CloneParams{NewID: newid, Name: a.opts["name"], Description: a.opts["description"], Pool: a.opts["pool"],
		Storage: a.opts["storage"], Format: a.opts["format"], Target: a.opts["target"], SnapName: a.opts["snapname"]}
	if a.has("full") {
		f := boolOpt(a, "full")
		p.Full = &f
	}
	if err := c.runTask(func(st *pve.State) (string, error) { return st.Clone(pve.Root, c.env.Node, id, p) }); err != nil {
		return c.fail(err, usage)
	}
	return 0
}

func (c *cli) qmResize(argv []string) int {
	const usage = "qm resize <vmid> <disk> <size> [OPTIONS]"
	a, id, code := c.withVMID(argv, usage, map[string]bool{"skiplock": true}, map[string]bool{"digest": true})
	if code >= 0 {
		return code
	}
	if len(a.pos) < 3 {
		fmt.Fprintf(c.env.Stderr, "400 not enough arguments\n%s\n", usage)
		return exitErr
	}
	if err := c.runTask(func(st *pve.State) (string, error) { return st.Resize(pve.Root, c.env.Node, id, a.pos[1], a.pos[2]) }); err != nil {
		return c.fail(err, usage)
	}
	return 0
}

// readCustomizations returns the virt-customize operations recorded in an
// image file (see virtCustomize).
func readCustomizations(path string) []string {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if op, ok := strings.CutPrefix(l, customizeMarker); ok {
			out = append(out, strings.TrimSpace(op))
		}
	}
	return out
}

// qmMigrate migrates a stopped VM to another node (offline only).
func (c *cli) qmMigrate(argv []string) int {
	const usage = "qm migrate <vmid> <target> [OPTIONS]"
	a, id, code := c.withVMID(argv, usage, map[string]bool{"online": true, "with-local-disks": true, "force": true}, map[string]bool{"targetstorage": true, "bwlimit": true, "migration_type": true, "migration_network": true})
	if code >= 0 {
		return code
	}
	if len(a.pos) < 2 {
		fmt.Fprintf(c.env.Stderr, "400 not enough arguments\n%s\n", usage)
		return exitErr
	}
	if boolOpt(a, "online") {
		return c.fail(pve.Fail("online migration is not simulated"), usage)
	}
	if err := c.runTask(func(st *pve.State) (string, error) { return st.Migrate(pve.Root, c.env.Node, id, a.pos[1]) }); err != nil {
		return c.fail(err, usage)
	}
	return 0
}
