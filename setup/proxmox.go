package setup

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/decent-stuff/dc-agent/identity"
)

// Template tags. A template is ours when it has TagAgent; it is finished
// when it is a template without TagBuilding.
const (
	TagAgent    = "dc-agent"
	TagTemplate = "dc-template"
	TagBuilding = "dc-building"
	// RecipeVersion changes when the way templates are built changes;
	// templates of another recipe are left alone and a new one is built.
	RecipeVersion = 1
)

// TagOS marks the template of an image.
func TagOS(image string) string { return "dc-os-" + image }

func tagRecipe() string { return fmt.Sprintf("dc-r%d", RecipeVersion) }

// Defaults of the Proxmox setup.
const (
	DefaultImageDir = "/var/lib/vz/template/dc-agent"
	DefaultVMIDBase = 9000
)

// ProxmoxOptions are the answers the Proxmox steps work from.
type ProxmoxOptions struct {
	Host      *Host
	Discovery *Discovery
	Storage   string
	Bridge    string
	Templates []string
	// ImageMirror replaces the publishers' download roots (a local mirror).
	ImageMirror string
	// ImageDir is where cloud images are kept on the host.
	ImageDir string
	// VMIDBase is the lowest VMID a new template gets.
	VMIDBase int
	// TokenFile is the local file the token secret is written to (0600).
	TokenFile string
	// RotateToken replaces the token even if its secret is still here.
	RotateToken bool
	// OwnerRef is a file whose owner a new token file gets: the agent key,
	// which `service install` gives to the service account, as every secret.
	OwnerRef string
	// Key is the agent key (the key step fills it before these steps
	// run): each agent gets its own token, its comment naming the key.
	Key *KeyStatus
	// TokenID is the token the existing config names ("" if none): an
	// agent set up before keeps it.
	TokenID string
	// Timeouts for the long commands (0: defaults).
	DownloadTimeout, CustomizeTimeout, ImportTimeout time.Duration
}

// ProxmoxResult is what the Proxmox steps established.
type ProxmoxResult struct {
	// Templates maps image names to template VMIDs.
	Templates map[string]int
	TokenID   string
	// Cluster: the node is one of several; contracts go to every node
	// (nodes = "auto"). NodeTemplates maps image names to the copies of
	// their template on the other nodes (node → VMID), for a template on
	// local storage.
	Cluster       bool
	NodeTemplates map[string]map[string]int
}

// ProxmoxSteps returns the steps that prepare the node: one per template,
// then the pool, user, role, token, ACLs and a check of the token's
// effective permissions.
func ProxmoxSteps(o *ProxmoxOptions, res *ProxmoxResult) ([]Step, error) {
	if o.Host == nil || o.Discovery == nil {
		return nil, errors.New("proxmox steps need a connected, discovered host")
	}
	if o.ImageDir == "" {
		o.ImageDir = DefaultImageDir
	}
	if err := checkImageDir(o.ImageDir); err != nil {
		return nil, err
	}
	if o.VMIDBase == 0 {
		o.VMIDBase = DefaultVMIDBase
	}
	if err := checkVMIDBase(o.VMIDBase); err != nil {
		return nil, err
	}
	if o.DownloadTimeout == 0 {
		o.DownloadTimeout = time.Hour
	}
	if o.CustomizeTimeout == 0 {
		o.CustomizeTimeout = 30 * time.Minute
	}
	if o.ImportTimeout == 0 {
		o.ImportTimeout = 30 * time.Minute
	}
	if res.Templates == nil {
		res.Templates = map[string]int{}
	}
	if _, ok := o.Discovery.Storage(o.Storage); !ok {
		return nil, Fixf("pass --storage with one of: "+storageNames(o.Discovery), "storage %q does not exist on node %s or cannot hold VM disks", o.Storage, o.Discovery.Node)
	}
	if _, ok := o.Discovery.Bridge(o.Bridge); !ok {
		return nil, Fixf("pass --bridge with one of: "+bridgeNames(o.Discovery), "bridge %q does not exist on node %s", o.Bridge, o.Discovery.Node)
	}
	p := &pveSetup{o: o, res: res}
	var steps []Step
	for _, name := range o.Templates {
		img, ok := LookupImage(name)
		if !ok {
			return nil, Fixf("choose from "+strings.Join(ImageNames(), ", "), "unknown template %q", name)
		}
		steps = append(steps, Step{ID: "template:" + name, Title: "Template " + name, Run: func(ctx context.Context, r *Reporter) error {
			return p.template(ctx, r, img)
		}})
	}
	if len(o.Discovery.Nodes) > 1 {
		steps = append(steps, Step{ID: "pve-cluster", Title: "Templates on every node", Run: p.cluster})
	}
	steps = append(steps,
		Step{ID: "pve-pool", Title: "Pool " + PVEPool, Run: p.pool},
		Step{ID: "pve-user", Title: "User " + PVEUser, Run: p.user},
		Step{ID: "pve-role", Title: "Role " + PVERole, Run: p.role},
		Step{ID: "pve-token", Title: "API token of the agent", Run: p.token},
		Step{ID: "pve-acl", Title: "Permissions", Run: p.acl},
		Step{ID: "pve-verify", Title: "Check the token's permissions", Run: p.verify},
	)
	return steps, nil
}

func storageNames(d *Discovery) string {
	var n []string
	for _, s := range d.Storages {
		n = append(n, s.ID)
	}
	return orNone(n)
}

func bridgeNames(d *Discovery) string {
	var n []string
	for _, b := range d.Bridges {
		n = append(n, b.Name)
	}
	return orNone(n)
}

type pveSetup struct {
	o   *ProxmoxOptions
	res *ProxmoxResult
	// tokenName is the agent's token (p.token chooses it); others: the
	// user has tokens of other agents too.
	tokenName string
	others    bool
}

// tokenID is the agent's token as the API names it.
func (p *pveSetup) tokenID() string { return PVEUser + "!" + p.tokenName }

func (p *pveSetup) run(ctx context.Context, r *Reporter, args ...string) (CmdResult, error) {
	return p.o.Host.Run(ctx, r, Cmd{Args: args})
}

// listJSON runs a command that prints JSON and decodes it into v.
func (p *pveSetup) listJSON(ctx context.Context, r *Reporter, v any, args ...string) error {
	res, err := p.o.Host.Run(ctx, r, Cmd{Args: args, Quiet: true})
	if err != nil {
		return err
	}
	if err := json.Unmarshal(res.Stdout, v); err != nil {
		return fmt.Errorf("`%s` did not print the JSON expected: %w", strings.Join(args, " "), err)
	}
	return nil
}

func (p *pveSetup) vms(ctx context.Context, r *Reporter) ([]VMInfo, error) {
	res, err := p.o.Host.Run(ctx, r, Cmd{Args: []string{"pvesh", "get", "/cluster/resources", "--type", "vm", "--output-format", "json"}, Quiet: true})
	if err != nil {
		return nil, fmt.Errorf("list VMs: %w", err)
	}
	return ParseVMs(res.Stdout)
}

// template makes sure a finished template of img exists: it reuses a good
// one, removes half-built ones left by an interrupted run, and otherwise
// builds one.
func (p *pveSetup) template(ctx context.Context, r *Reporter, img CloudImage) error {
	node := p.o.Discovery.Node
	vms, err := p.vms(ctx, r)
	if err != nil {
		return err
	}
	var good, kept []VMInfo
	var removed []string
	for _, v := range vms {
		if v.Node != node || !v.HasTag(TagAgent) || !v.HasTag(TagOS(img.Name)) {
			kept = append(kept, v)
			continue
		}
		if !v.Template || v.HasTag(TagBuilding) {
			r.Notef("VM %d %s is a half-built template from an interrupted run; removing it", v.VMID, v.Name)
			if err := p.destroy(ctx, r, v.VMID); err != nil {
				return err
			}
			removed = append(removed, fmt.Sprint(v.VMID))
			r.Changed("removed half-built VM %s", strings.Join(removed, ", "))
			continue
		}
		kept = append(kept, v)
		if v.HasTag(tagRecipe()) {
			good = append(good, v)
		}
	}
	// The newest good template wins.
	sort.Slice(good, func(i, j int) bool { return good[i].VMID > good[j].VMID })
	for _, v := range good {
		if problem := p.checkTemplate(ctx, r, v.VMID); problem != "" {
			r.Warn(fmt.Sprintf("template %d %s is not usable (%s); building a new one", v.VMID, v.Name, problem),
				fmt.Sprintf("remove it once no VM uses it: qm destroy %d", v.VMID))
			continue
		}
		p.res.Templates[img.Name] = v.VMID
		r.Skip("template %d %s exists", v.VMID, v.Name)
		return nil
	}
	var built string
	if err := p.build(ctx, r, img, kept, &built); err != nil {
		return err
	}
	msg := "built template " + built
	if len(removed) > 0 {
		msg += fmt.Sprintf(" (removed the half-built VM %s of an interrupted run)", strings.Join(removed, ", "))
	}
	r.Changed("%s", msg)
	return nil
}

// checkTemplate reads a template's config and says what is wrong ("" if
// nothing).
func (p *pveSetup) checkTemplate(ctx context.Context, r *Reporter, vmid int) string {
	var conf map[string]any
	if err := p.listJSON(ctx, r, &conf, "pvesh", "get", fmt.Sprintf("/nodes/%s/qemu/%d/config", p.o.Discovery.Node, vmid), "--output-format", "json"); err != nil {
		return err.Error()
	}
	str := func(k string) string { s, _ := conf[k].(string); return s }
	switch {
	case str("scsi0") == "":
		return "no scsi0 disk"
	case str("scsihw") != "virtio-scsi-pci" && str("scsihw") != "virtio-scsi-single":
		return "not virtio-scsi"
	case !strings.Contains(str("ide2"), "cloudinit"):
		return "no cloud-init drive"
	case str("serial0") != "socket":
		return "no serial console"
	case !agentOn(str("agent")):
		return "guest agent not enabled"
	}
	return ""
}

func agentOn(v string) bool {
	first, _, _ := strings.Cut(v, ",")
	return first == "1" || first == "enabled=1"
}

// destroy removes a VM with its disks (bounded, even when ctx was
// cancelled: a half-built template must not outlive a Ctrl-C).
func (p *pveSetup) destroy(ctx context.Context, r *Reporter, vmid int) error {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
	defer cancel()
	_, err := p.run(cctx, r, "qm", "destroy", fmt.Sprint(vmid), "--purge", "1", "--destroy-unreferenced-disks", "1")
	if err != nil {
		return WithFix(fmt.Errorf("remove VM %d: %w", vmid, err), fmt.Sprintf("remove it on the node: qm destroy %d --purge 1", vmid))
	}
	return nil
}

// build downloads, verifies and customizes the image and makes the
// template; on failure it removes the VM it started.
func (p *pveSetup) build(ctx context.Context, r *Reporter, img CloudImage, vms []VMInfo, built *string) (err error) {
	o := p.o
	if !o.Discovery.VirtCustomize {
		return Fixf("install it on the node: apt-get install -y libguestfs-tools, then re-run",
			"virt-customize is not installed on the node; it installs the guest agent into the image")
	}
	hexLen := 64
	if img.Algo == "sha512" {
		hexLen = 128
	}
	imageURL, sumsURL := img.URLs(o.ImageMirror)
	if _, err := p.run(ctx, r, "mkdir", "-p", o.ImageDir); err != nil {
		return fmt.Errorf("create image dir: %w", err)
	}
	sums, err := o.Host.Run(ctx, r, Cmd{Args: []string{"curl", "-fsSL", "--max-time", "120", sumsURL}, Quiet: true, Timeout: 3 * time.Minute})
	if err != nil {
		return WithFix(fmt.Errorf("fetch checksums %s: %w", sumsURL, err), "check the node's internet access (or --image-mirror) and re-run")
	}
	want, err := ParseChecksums(string(sums.Stdout), img.File(), hexLen)
	if err != nil {
		return WithFix(fmt.Errorf("%s: %w", sumsURL, err), "the image publisher changed its layout; update dc-agent or use --image-mirror")
	}
	file := path.Join(o.ImageDir, img.File())
	sumOf := func(f string) (string, error) {
		res, err := o.Host.Run(ctx, r, Cmd{Args: []string{img.Algo + "sum", f}, Quiet: true, Timeout: 10 * time.Minute})
		if err != nil {
			return "", err
		}
		return parseSumOutput(string(res.Stdout), hexLen)
	}
	have := ""
	if t, err := o.Host.Run(ctx, r, Cmd{Args: []string{"test", "-f", file}, OK: []int{1}}); err != nil {
		return err
	} else if t.ExitCode == 0 {
		if have, err = sumOf(file); err != nil {
			return err
		}
	}
	if have == want {
		r.Notef("%s is already downloaded and verified", file)
	} else {
		r.Notef("downloading %s (about %d MB)", imageURL, img.SizeMB)
		part := file + ".part"
		if _, err := o.Host.Run(ctx, r, Cmd{Args: []string{"curl", "-fSL", "-sS", "--retry", "3", "--connect-timeout", "30", "-o", part, imageURL}, Timeout: o.DownloadTimeout}); err != nil {
			return WithFix(fmt.Errorf("download %s: %w", imageURL, err), "check the node's internet access and disk space, then re-run")
		}
		got, err := sumOf(part)
		if err != nil {
			return err
		}
		if got != want {
			_, _ = p.run(ctx, r, "rm", "-f", part)
			return Fixf("re-run to download it again; if it keeps failing, the mirror is serving a bad file",
				"%s checksum mismatch: got %s, %s says %s", img.File(), got, img.Sums, want)
		}
		if _, err := p.run(ctx, r, "mv", "-f", part, file); err != nil {
			return err
		}
		r.Notef("downloaded and verified %s (%s %s)", file, img.Algo, want[:16])
	}

	// Customize a copy: the pristine download keeps its checksum, so a
	// re-run can reuse it.
	work := file + ".dc-build"
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		_, _ = p.run(cctx, r, "rm", "-f", work)
	}()
	if _, err := p.run(ctx, r, "cp", "-f", "--sparse=always", file, work); err != nil {
		return fmt.Errorf("copy image: %w", err)
	}
	if _, err := o.Host.Run(ctx, r, Cmd{Args: []string{"virt-customize", "-a", work, "--install", "qemu-guest-agent", "--truncate", "/etc/machine-id"}, Timeout: o.CustomizeTimeout}); err != nil {
		return WithFix(fmt.Errorf("install the guest agent into the image: %w", err), "check that the node can reach the distribution's package mirrors (virt-customize installs packages from them)")
	}

	vmid := freeVMID(vms, o.VMIDBase)
	name := fmt.Sprintf("dc-%s-r%d-%s", img.Slug(), RecipeVersion, want[:8])
	tags := func(state string) string {
		return strings.Join([]string{TagAgent, state, TagOS(img.Name), tagRecipe()}, ";")
	}
	desc := fmt.Sprintf("Cloud-init template for dc-agent: %s from %s (%s %s), qemu-guest-agent installed, machine-id emptied. Built by dc-agent setup proxmox; VMs are cloned from it.",
		img.Title, imageURL, img.Algo, want)
	if _, err := p.run(ctx, r, "qm", "create", fmt.Sprint(vmid), "--name", name, "--description", desc, "--tags", tags(TagBuilding),
		"--ostype", "l26", "--memory", "2048", "--cores", "2", "--scsihw", "virtio-scsi-pci",
		"--net0", "virtio,bridge="+o.Bridge, "--agent", "enabled=1", "--serial0", "socket", "--vga", "serial0"); err != nil {
		return fmt.Errorf("create VM %d: %w", vmid, err)
	}
	defer func() {
		if err != nil {
			if derr := p.destroy(ctx, r, vmid); derr != nil {
				err = fmt.Errorf("%w; and removing the half-built VM %d failed too: %v", err, vmid, derr)
			} else {
				r.Notef("removed the half-built VM %d", vmid)
			}
		}
	}()
	if _, err := o.Host.Run(ctx, r, Cmd{Args: []string{"qm", "set", fmt.Sprint(vmid), "--scsi0", o.Storage + ":0,import-from=" + work}, Timeout: o.ImportTimeout}); err != nil {
		return fmt.Errorf("import the disk into VM %d: %w", vmid, err)
	}
	if _, err := p.run(ctx, r, "qm", "set", fmt.Sprint(vmid), "--ide2", o.Storage+":cloudinit", "--boot", "order=scsi0", "--ipconfig0", "ip=dhcp"); err != nil {
		return fmt.Errorf("add the cloud-init drive to VM %d: %w", vmid, err)
	}
	if _, err := p.run(ctx, r, "qm", "template", fmt.Sprint(vmid)); err != nil {
		return fmt.Errorf("convert VM %d to a template: %w", vmid, err)
	}
	if _, err := p.run(ctx, r, "qm", "set", fmt.Sprint(vmid), "--tags", tags(TagTemplate)); err != nil {
		return fmt.Errorf("tag template %d: %w", vmid, err)
	}
	p.res.Templates[img.Name] = vmid
	*built = fmt.Sprintf("%d %s", vmid, name)
	return nil
}

// freeVMID is the lowest VMID from base that no VM of the cluster uses.
func freeVMID(vms []VMInfo, base int) int {
	used := map[int]bool{}
	for _, v := range vms {
		used[v.VMID] = true
	}
	for id := base; ; id++ {
		if !used[id] {
			return id
		}
	}
}

func (p *pveSetup) pool(ctx context.Context, r *Reporter) error {
	var pools []struct {
		PoolID string `json:"poolid"`
	}
	if err := p.listJSON(ctx, r, &pools, "pveum", "pool", "list", "--output-format", "json"); err != nil {
		return err
	}
	for _, x := range pools {
		if x.PoolID == PVEPool {
			r.Skip("pool %s exists", PVEPool)
			return nil
		}
	}
	if _, err := p.run(ctx, r, "pveum", "pool", "add", PVEPool, "--comment", "VMs provisioned by dc-agent for Decent Cloud contracts"); err != nil {
		return err
	}
	r.Changed("created pool %s", PVEPool)
	return nil
}

func (p *pveSetup) user(ctx context.Context, r *Reporter) error {
	var users []struct {
		UserID string  `json:"userid"`
		Enable flexInt `json:"enable"`
	}
	if err := p.listJSON(ctx, r, &users, "pveum", "user", "list", "--output-format", "json"); err != nil {
		return err
	}
	for _, u := range users {
		if u.UserID == PVEUser {
			if u.Enable == 0 {
				return Fixf("enable it on the node: pveum user modify "+PVEUser+" --enable 1 (if you disabled it on purpose, dc-agent cannot provision)",
					"user %s exists but is disabled", PVEUser)
			}
			r.Skip("user %s exists", PVEUser)
			return nil
		}
	}
	if _, err := p.run(ctx, r, "pveum", "user", "add", PVEUser, "--comment", "Decent Cloud agent (created by dc-agent setup; API token only, no password)"); err != nil {
		return err
	}
	r.Changed("created user %s", PVEUser)
	return nil
}

func (p *pveSetup) role(ctx context.Context, r *Reporter) error {
	want := AgentPrivileges(p.o.Discovery.Version.Major)
	var roles []struct {
		RoleID string `json:"roleid"`
		Privs  string `json:"privs"`
	}
	if err := p.listJSON(ctx, r, &roles, "pveum", "role", "list", "--output-format", "json"); err != nil {
		return err
	}
	privs := strings.Join(want, ",")
	for _, x := range roles {
		if x.RoleID != PVERole {
			continue
		}
		have := splitTags(x.Privs)
		sort.Strings(have)
		if strings.Join(have, ",") == privs {
			r.Skip("role %s has exactly the %d privileges needed", PVERole, len(want))
			return nil
		}
		if _, err := p.run(ctx, r, "pveum", "role", "modify", PVERole, "--privs", privs); err != nil {
			return err
		}
		r.Changed("set role %s to %s (was %s)", PVERole, privs, x.Privs)
		return nil
	}
	if _, err := p.run(ctx, r, "pveum", "role", "add", PVERole, "--privs", privs); err != nil {
		return err
	}
	r.Changed("created role %s: %s", PVERole, privs)
	return nil
}

// tokenComment names the agent a token belongs to, so the next run of
// setup (on this host or another) tells its own token from another
// agent's.
func tokenComment(pubkey string) string { return "dc-agent provisioning for agent " + pubkey }

// chooseToken picks the agent's token among the user's tokens: the one
// whose comment names this agent's key, else the one the config names,
// else PVETokenName if no agent has it, else one named after the key. So
// each agent on a node (or a cluster) gets a token of its own, and a
// re-run never takes over another agent's.
func (p *pveSetup) chooseToken(toks []pveToken) string {
	pub := ""
	if p.o.Key != nil {
		pub = p.o.Key.Pubkey
	}
	for _, t := range toks {
		if pub != "" && t.Comment == tokenComment(pub) {
			return t.TokenID
		}
	}
	if user, name, ok := strings.Cut(p.o.TokenID, "!"); ok && user == PVEUser && name != "" {
		return name
	}
	if !slices.ContainsFunc(toks, func(t pveToken) bool { return t.TokenID == PVETokenName }) || pub == "" {
		return PVETokenName
	}
	return PVETokenName + "-" + pub[:8]
}

type pveToken struct {
	TokenID string  `json:"tokenid"`
	Privsep flexInt `json:"privsep"`
	Comment string  `json:"comment"`
}

func (p *pveSetup) token(ctx context.Context, r *Reporter) error {
	var toks []pveToken
	if err := p.listJSON(ctx, r, &toks, "pveum", "user", "token", "list", PVEUser, "--output-format", "json"); err != nil {
		return err
	}
	p.tokenName = p.chooseToken(toks)
	p.res.TokenID = p.tokenID()
	p.others = slices.ContainsFunc(toks, func(t pveToken) bool { return t.TokenID != p.tokenName })
	exists, privsep := false, false
	for _, t := range toks {
		if t.TokenID == p.tokenName {
			exists, privsep = true, t.Privsep != 0
		}
	}
	secretHere := false
	if s, err := identity.ReadSecretFile(p.o.TokenFile); err == nil && s != "" {
		secretHere = true
	}
	if exists && secretHere && privsep && !p.o.RotateToken {
		r.Skip("token %s exists and its secret is in %s", p.tokenID(), p.o.TokenFile)
		return nil
	}
	if exists {
		why := "its secret is not in " + p.o.TokenFile
		switch {
		case p.o.RotateToken:
			why = "--rotate-token"
		case !privsep:
			why = "it is not privilege-separated"
		}
		r.Notef("replacing token %s: %s", p.tokenID(), why)
		if _, err := p.run(ctx, r, "pveum", "user", "token", "remove", PVEUser, p.tokenName); err != nil {
			return err
		}
	}
	comment := "dc-agent provisioning"
	if p.o.Key != nil && p.o.Key.Pubkey != "" {
		comment = tokenComment(p.o.Key.Pubkey)
	}
	res, err := p.o.Host.Run(ctx, r, Cmd{Args: []string{"pveum", "user", "token", "add", PVEUser, p.tokenName,
		"--privsep", "1", "--comment", comment, "--output-format", "json"}, Secret: true})
	if err != nil {
		return err
	}
	var tok struct {
		FullTokenID string `json:"full-tokenid"`
		Value       string `json:"value"`
	}
	if err := json.Unmarshal(res.Stdout, &tok); err != nil || tok.Value == "" {
		return Fixf("remove the token on the node (pveum user token remove "+PVEUser+" "+p.tokenName+") and re-run",
			"pveum user token add did not print the token JSON")
	}
	if tok.FullTokenID != "" && tok.FullTokenID != p.tokenID() {
		return fmt.Errorf("pveum created token %q, expected %s", tok.FullTokenID, p.tokenID())
	}
	// The secret is shown once: keep it before anything else can fail.
	if err := os.MkdirAll(filepath.Dir(p.o.TokenFile), 0o700); err != nil {
		return err
	}
	if err := writeOwned(p.o.TokenFile, []byte(tok.Value+"\n"), 0o600, p.o.OwnerRef); err != nil {
		return WithFix(fmt.Errorf("write the token secret to %s: %w", p.o.TokenFile, err), "make the directory writable and re-run (the token is replaced)")
	}
	if exists {
		r.Changed("replaced token %s; secret in %s", p.tokenID(), p.o.TokenFile)
	} else {
		r.Changed("created token %s (privilege-separated); secret in %s", p.tokenID(), p.o.TokenFile)
	}
	return nil
}

// cluster makes every node able to clone the templates: on local storage,
// a copy of each on every other online node (CopyTemplate); on shared
// storage nothing (the clone targets the node). The config then places
// contracts on every node (nodes = "auto").
func (p *pveSetup) cluster(ctx context.Context, r *Reporter) error {
	read := func(ctx context.Context, args ...string) ([]byte, error) {
		res, err := p.o.Host.Run(ctx, r, Cmd{Args: args, Quiet: true})
		return res.Stdout, err
	}
	c, err := ReadCluster(ctx, read)
	if err != nil {
		return err
	}
	p.res.Cluster = true
	for _, n := range c.Offline {
		r.Warn("node "+n+" is offline: it gets no template copies and no contracts until it is back",
			"re-run dc-agent setup proxmox once "+n+" is online")
	}
	nodes := len(c.Online) + len(c.Offline)
	if c.Shared[p.o.Storage] {
		r.Skip("cluster of %d nodes; the templates are on shared storage %s, which every node clones from", nodes, p.o.Storage)
		return nil
	}
	changed := false
	run := func(ctx context.Context, args ...string) ([]byte, error) {
		changed = true
		res, err := p.o.Host.Run(ctx, r, Cmd{Args: args})
		return res.Stdout, err
	}
	if p.res.NodeTemplates == nil {
		p.res.NodeTemplates = map[string]map[string]int{}
	}
	names := slices.Sorted(maps.Keys(p.res.Templates))
	var summary []string
	for _, name := range names {
		copies, err := CopyTemplate(ctx, run, c, p.res.Templates[name], p.o.VMIDBase)
		if err != nil {
			return err
		}
		p.res.NodeTemplates[name] = copies
		var on []string
		for _, n := range slices.Sorted(maps.Keys(copies)) {
			on = append(on, fmt.Sprintf("%s %d", n, copies[n]))
		}
		summary = append(summary, fmt.Sprintf("%s %d (copies: %s)", name, p.res.Templates[name], orNone(on)))
		if changed {
			// The next template's copies need fresh VMIDs.
			if c, err = ReadCluster(ctx, read); err != nil {
				return err
			}
		}
	}
	msg := fmt.Sprintf("cluster of %d nodes; %s on local storage %s: %s", nodes, plural(len(names), "template", "templates"), p.o.Storage, strings.Join(summary, "; "))
	if changed {
		r.Changed("%s", msg)
	} else {
		r.Skip("%s", msg)
	}
	return nil
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

func (p *pveSetup) layout() Layout {
	var ids []int
	for _, id := range p.res.Templates {
		ids = append(ids, id)
	}
	for _, copies := range p.res.NodeTemplates {
		for _, id := range copies {
			ids = append(ids, id)
		}
	}
	return Layout{Pool: PVEPool, Storage: p.o.Storage, Bridge: p.o.Bridge, Templates: ids}
}

// ourRoles are the roles setup grants; entries of them for the agent's
// token on paths it no longer uses are removed (and for the user, while
// it has no other agent's token: what the user is granted bounds every
// token of it).
var ourRoles = map[string]bool{PVERole: true, RoleTemplateUser: true, RoleDatastoreUser: true, RoleSDNUser: true, NodeAuditGrant.Role: true}

func (p *pveSetup) acl(ctx context.Context, r *Reporter) error {
	var entries []struct {
		Path   string `json:"path"`
		Type   string `json:"type"`
		UGID   string `json:"ugid"`
		RoleID string `json:"roleid"`
	}
	if err := p.listJSON(ctx, r, &entries, "pveum", "acl", "list", "--output-format", "json"); err != nil {
		return err
	}
	type key struct{ path, typ, id, role string }
	have := map[key]bool{}
	for _, e := range entries {
		have[key{e.Path, e.Type, e.UGID, e.RoleID}] = true
	}
	want := map[key]bool{}
	var added, removed []string
	for _, g := range p.layout().Grants(p.o.Discovery.Version.Major) {
		uk, tk := key{g.Path, "user", PVEUser, g.Role}, key{g.Path, "token", p.tokenID(), g.Role}
		want[uk], want[tk] = true, true
		if have[uk] && have[tk] {
			continue
		}
		if _, err := p.run(ctx, r, "pveum", "acl", "modify", g.Path, "--roles", g.Role, "--users", PVEUser, "--tokens", p.tokenID(), "--propagate", "1"); err != nil {
			return err
		}
		added = append(added, g.Role+" on "+g.Path)
	}
	for _, e := range entries {
		k := key{e.Path, e.Type, e.UGID, e.RoleID}
		if want[k] || !ourRoles[e.RoleID] || !(e.Type == "user" && e.UGID == PVEUser && !p.others || e.Type == "token" && e.UGID == p.tokenID()) {
			continue
		}
		flag := "--users"
		if e.Type == "token" {
			flag = "--tokens"
		}
		if _, err := p.run(ctx, r, "pveum", "acl", "delete", e.Path, "--roles", e.RoleID, flag, e.UGID); err != nil {
			return err
		}
		removed = append(removed, fmt.Sprintf("%s on %s for %s", e.RoleID, e.Path, e.UGID))
	}
	switch {
	case len(added) == 0 && len(removed) == 0:
		r.Skip("every grant is in place")
	default:
		msg := ""
		if len(added) > 0 {
			msg = "granted " + strings.Join(added, ", ")
		}
		if len(removed) > 0 {
			if msg != "" {
				msg += "; "
			}
			msg += "removed stale " + strings.Join(removed, ", ")
		}
		r.Changed("%s", msg)
	}
	return nil
}

// verify reads the token's effective privileges path by path, as PVE
// computes them (privilege separation: user ∩ token).
func (p *pveSetup) verify(ctx context.Context, r *Reporter) error {
	var lacking []string
	grants := p.layout().Grants(p.o.Discovery.Version.Major)
	// One call lists every path the token has an ACL on, which each
	// grant path has.
	var perms map[string]map[string]any
	if err := p.listJSON(ctx, r, &perms, "pveum", "user", "token", "permissions", PVEUser, p.tokenName, "--output-format", "json"); err != nil {
		return err
	}
	for _, g := range grants {
		have := map[string]bool{}
		for priv := range perms[g.Path] {
			have[priv] = true
		}
		if m := Missing(g.Need, have); len(m) > 0 {
			lacking = append(lacking, strings.Join(m, ",")+" on "+g.Path)
		}
	}
	if len(lacking) > 0 {
		return Fixf("look for a NoAccess entry or a group ACL overriding it (pveum acl list), remove it and re-run",
			"the token lacks %s", strings.Join(lacking, "; "))
	}
	r.Skip("the token holds exactly what it needs on %d paths", len(grants))
	return nil
}
