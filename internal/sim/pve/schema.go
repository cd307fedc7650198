package pve

import (
	"fmt"
	"net"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/crypto/ssh"
)

// kind is a schema type.
type kind int

const (
	kString kind = iota
	kInt
	kBool
	kNumber
)

// keySpec describes one VM config key.
type keySpec struct {
	kind     kind
	min, max int64 // for kInt (max 0: none)
	// privs: holding any one of them on /vms/<id> allows setting the key.
	privs []string
	// rootOnly keys can only be set by root@pam.
	rootOnly bool
	format   func(v string) error
	maxLen   int
}

var (
	privCPU       = []string{"VM.Config.CPU"}
	privMemory    = []string{"VM.Config.Memory"}
	privOptions   = []string{"VM.Config.Options"}
	privDisk      = []string{"VM.Config.Disk"}
	privHW        = []string{"VM.Config.HWType"}
	privNetwork   = []string{"VM.Config.Network"}
	privCloudinit = []string{"VM.Config.Cloudinit", "VM.Config.Network"}
)

var fixedKeys = map[string]keySpec{
	"name":         {kind: kString, privs: privOptions, format: verifyDNSName},
	"description":  {kind: kString, privs: privOptions, maxLen: 8192},
	"tags":         {kind: kString, privs: privOptions, format: verifyTagList},
	"agent":        {kind: kString, privs: privOptions, format: verifyAgent},
	"onboot":       {kind: kBool, privs: privOptions},
	"protection":   {kind: kBool, privs: privOptions},
	"ostype":       {kind: kString, privs: privOptions, format: enumOf("other", "wxp", "w2k", "w2k3", "w2k8", "wvista", "win7", "win8", "win10", "win11", "l24", "l26", "solaris")},
	"startup":      {kind: kString, privs: privOptions},
	"localtime":    {kind: kBool, privs: privOptions},
	"freeze":       {kind: kBool, privs: privOptions},
	"vmgenid":      {kind: kString, privs: privOptions},
	"hotplug":      {kind: kString, privs: privHW},
	"cores":        {kind: kInt, min: 1, max: 1024, privs: privCPU},
	"sockets":      {kind: kInt, min: 1, max: 4, privs: privCPU},
	"vcpus":        {kind: kInt, min: 1, max: 4096, privs: privCPU},
	"cpu":          {kind: kString, privs: privCPU},
	"cpulimit":     {kind: kNumber, privs: privCPU},
	"cpuunits":     {kind: kInt, min: 1, max: 262144, privs: privCPU},
	"affinity":     {kind: kString, privs: privCPU},
	"numa":         {kind: kBool, privs: privCPU},
	"memory":       {kind: kString, privs: privMemory, format: verifyMemory},
	"balloon":      {kind: kInt, min: 0, max: 4194304, privs: privMemory},
	"shares":       {kind: kInt, min: 0, max: 50000, privs: privMemory},
	"boot":         {kind: kString, privs: privDisk},
	"bootdisk":     {kind: kString, privs: privDisk},
	"scsihw":       {kind: kString, privs: privHW, format: enumOf("lsi", "lsi53c810", "virtio-scsi-pci", "virtio-scsi-single", "megasas", "pvscsi")},
	"vga":          {kind: kString, privs: privHW},
	"machine":      {kind: kString, privs: privHW},
	"bios":         {kind: kString, privs: privHW, format: enumOf("seabios", "ovmf")},
	"smbios1":      {kind: kString, privs: privHW},
	"tablet":       {kind: kBool, privs: privHW},
	"kvm":          {kind: kBool, privs: privHW},
	"acpi":         {kind: kBool, privs: privHW},
	"rng0":         {kind: kString, privs: privHW},
	"audio0":       {kind: kString, privs: privHW},
	"efidisk0":     {kind: kString, privs: privDisk},
	"tpmstate0":    {kind: kString, privs: privDisk},
	"ciuser":       {kind: kString, privs: privCloudinit},
	"cipassword":   {kind: kString, privs: privCloudinit},
	"citype":       {kind: kString, privs: privCloudinit, format: enumOf("configdrive2", "nocloud", "opennebula")},
	"ciupgrade":    {kind: kBool, privs: privCloudinit},
	"cicustom":     {kind: kString, privs: privCloudinit},
	"nameserver":   {kind: kString, privs: privCloudinit, format: verifyAddressList},
	"searchdomain": {kind: kString, privs: privCloudinit},
	"sshkeys":      {kind: kString, privs: privCloudinit, format: verifyURLEncoded},
	"template":     {kind: kBool, rootOnly: true},
	"lock":         {kind: kString, rootOnly: true},
	"args":         {kind: kString, rootOnly: true},
	"hookscript":   {kind: kString, rootOnly: true},
}

var indexedKeys = []struct {
	re   *regexp.Regexp
	max  int
	spec keySpec
}{
	{regexp.MustCompile(`^net(\d+)$`), 31, keySpec{kind: kString, privs: privNetwork, format: verifyNet}},
	{regexp.MustCompile(`^ipconfig(\d+)$`), 31, keySpec{kind: kString, privs: privCloudinit, format: verifyIPConfig}},
	{regexp.MustCompile(`^scsi(\d+)$`), 30, keySpec{kind: kString, privs: privDisk, format: verifyDrive}},
	{regexp.MustCompile(`^virtio(\d+)$`), 15, keySpec{kind: kString, privs: privDisk, format: verifyDrive}},
	{regexp.MustCompile(`^sata(\d+)$`), 5, keySpec{kind: kString, privs: privDisk, format: verifyDrive}},
	{regexp.MustCompile(`^ide(\d+)$`), 3, keySpec{kind: kString, privs: privDisk, format: verifyDrive}},
	{regexp.MustCompile(`^unused(\d+)$`), 255, keySpec{kind: kString, privs: privDisk}},
	{regexp.MustCompile(`^serial(\d+)$`), 3, keySpec{kind: kString, privs: privHW}},
	{regexp.MustCompile(`^usb(\d+)$`), 4, keySpec{kind: kString, privs: privHW}},
	{regexp.MustCompile(`^numa(\d+)$`), 7, keySpec{kind: kString, privs: privCPU}},
	{regexp.MustCompile(`^hostpci(\d+)$`), 15, keySpec{kind: kString, rootOnly: true}},
}

// lookupKey returns the schema of a config key.
func lookupKey(key string) (keySpec, bool) {
	if s, ok := fixedKeys[key]; ok {
		return s, true
	}
	for _, ik := range indexedKeys {
		if m := ik.re.FindStringSubmatch(key); m != nil {
			n, _ := strconv.Atoi(m[1])
			if n <= ik.max && (m[1] == "0" || !strings.HasPrefix(m[1], "0")) {
				return ik.spec, true
			}
		}
	}
	return keySpec{}, false
}

// IsDriveKey reports whether key names a disk/cdrom drive.
func IsDriveKey(key string) bool {
	for _, p := range []string{"scsi", "virtio", "sata", "ide", "efidisk", "tpmstate"} {
		if rest, ok := strings.CutPrefix(key, p); ok {
			if _, err := strconv.Atoi(rest); err == nil {
				return true
			}
		}
	}
	return false
}

const notInSchema = "property is not defined in schema and the schema does not allow additional properties"

// normalizeParam checks one parameter against its schema and returns its
// canonical string form (booleans as 0/1).
func normalizeParam(spec keySpec, v string) (string, string) {
	switch spec.kind {
	case kInt:
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return "", fmt.Sprintf("type check ('integer') failed - got '%s'", v)
		}
		if n < spec.min {
			return "", fmt.Sprintf("value must have a minimum value of %d", spec.min)
		}
		if spec.max != 0 && n > spec.max {
			return "", fmt.Sprintf("value must have a maximum value of %d", spec.max)
		}
		return strconv.FormatInt(n, 10), ""
	case kBool:
		switch strings.ToLower(v) {
		case "1", "true", "yes", "on":
			return "1", ""
		case "0", "false", "no", "off":
			return "0", ""
		}
		return "", fmt.Sprintf("type check ('boolean') failed - got '%s'", v)
	case kNumber:
		if _, err := strconv.ParseFloat(v, 64); err != nil {
			return "", fmt.Sprintf("type check ('number') failed - got '%s'", v)
		}
		return v, ""
	}
	if spec.maxLen > 0 && len(v) > spec.maxLen {
		return "", fmt.Sprintf("value may only be %d characters long", spec.maxLen)
	}
	if spec.format != nil {
		if err := spec.format(v); err != nil {
			return "", "invalid format - " + err.Error()
		}
	}
	return v, ""
}

// renderValue converts a stored config value to its JSON type.
func renderValue(key, v string) any {
	spec, ok := lookupKey(key)
	if !ok {
		return v
	}
	switch spec.kind {
	case kInt, kBool:
		if n, err := strconv.ParseInt(v, 10, 64); err == nil {
			return n
		}
	case kNumber:
		if f, err := strconv.ParseFloat(v, 64); err == nil {
			return f
		}
	}
	return v
}

var dnsNameRe = regexp.MustCompile(`^(([a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?)\.)*([a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?)$`)

func verifyDNSName(v string) error {
	if !dnsNameRe.MatchString(v) {
		return fmt.Errorf("value does not look like a valid DNS name")
	}
	return nil
}

// verifyAddressList is PVE's 'address-list' format (nameserver): IP
// addresses separated by spaces, commas or semicolons.
func verifyAddressList(v string) error {
	for _, a := range strings.FieldsFunc(v, func(r rune) bool { return r == ';' || r == ',' || r == ' ' || r == '\t' || r == '\n' || r == 0 }) {
		if net.ParseIP(a) == nil {
			return fmt.Errorf("unable to parse ip address '%s'", a)
		}
	}
	return nil
}

var tagRe = regexp.MustCompile(`(?i)^[a-z0-9_][a-z0-9_\-+.]*$`)

func verifyTagList(v string) error {
	for _, t := range strings.FieldsFunc(v, func(r rune) bool { return r == ';' || r == ',' || r == ' ' }) {
		if !tagRe.MatchString(t) {
			return fmt.Errorf("invalid characters in tag '%s'", t)
		}
	}
	return nil
}

// urlencodedRe is PVE's check of the sshkeys value: it must already be
// percent-encoded ('+' for space is not accepted).
var urlencodedRe = regexp.MustCompile(`^[-%a-zA-Z0-9_.!~*'()]*$`)

func verifyURLEncoded(v string) error {
	if !urlencodedRe.MatchString(v) {
		return fmt.Errorf("invalid urlencoded string: %s", v)
	}
	return nil
}

// ValidateSSHKeys is PVE's second sshkeys check, after decoding: every
// line must be an OpenSSH public key.
func ValidateSSHKeys(encoded string) error {
	dec, err := url.PathUnescape(encoded)
	if err != nil {
		return Fail("SSH public key validation error")
	}
	for _, line := range strings.Split(dec, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if _, _, _, _, err := ssh.ParseAuthorizedKey([]byte(line)); err != nil {
			return Fail("SSH public key validation error")
		}
	}
	return nil
}

func verifyMemory(v string) error {
	s := strings.TrimPrefix(v, "current=")
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return fmt.Errorf("format error\ncurrent: type check ('integer') failed - got '%s'", s)
	}
	if n < 16 {
		return fmt.Errorf("format error\ncurrent: value must have a minimum value of 16")
	}
	return nil
}

func verifyAgent(v string) error {
	for i, part := range strings.Split(v, ",") {
		k, val, ok := strings.Cut(part, "=")
		if !ok {
			if i == 0 {
				k, val = "enabled", part
			} else {
				return fmt.Errorf("format error\n%s: unknown option", part)
			}
		}
		switch k {
		case "enabled", "fstrim_cloned_disks", "freeze-fs-on-backup", "freeze-fs":
			if _, e := normalizeParam(keySpec{kind: kBool}, val); e != "" {
				return fmt.Errorf("format error\n%s: %s", k, e)
			}
		case "type":
			if val != "virtio" && val != "isa" {
				return fmt.Errorf("format error\ntype: value '%s' does not have a value in the enumeration 'virtio, isa'", val)
			}
		default:
			return fmt.Errorf("format error\n%s: property is not defined in schema", k)
		}
	}
	return nil
}

// AgentEnabled reports whether an agent config value turns the agent on.
func AgentEnabled(v string) bool {
	first, _, _ := strings.Cut(v, ",")
	if k, val, ok := strings.Cut(first, "="); ok {
		if k != "enabled" {
			return false
		}
		first = val
	}
	return first == "1" || first == "true" || first == "yes" || first == "on"
}

func enumOf(vals ...string) func(string) error {
	return func(v string) error {
		if !slices.Contains(vals, v) {
			return fmt.Errorf("value '%s' does not have a value in the enumeration '%s'", v, strings.Join(vals, ", "))
		}
		return nil
	}
}

// PropertyList parses "a,b=c,d=e" with an optional default key for the
// first bare value.
func PropertyList(v, defaultKey string) (map[string]string, []string) {
	out := map[string]string{}
	var order []string
	for i, part := range strings.Split(v, ",") {
		if part == "" {
			continue
		}
		k, val, ok := strings.Cut(part, "=")
		if !ok {
			if i == 0 && defaultKey != "" {
				k, val = defaultKey, part
			} else {
				k, val = part, ""
			}
		}
		out[k] = val
		order = append(order, k)
	}
	return out, order
}

var netModels = []string{"virtio", "e1000", "e1000e", "rtl8139", "vmxnet3"}
var macRe = regexp.MustCompile(`^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$`)

// ParseNet parses a netN value into model, MAC and options.
func ParseNet(v string) (model, mac string, opts map[string]string, err error) {
	opts = map[string]string{}
	for i, part := range strings.Split(v, ",") {
		k, val, _ := strings.Cut(part, "=")
		if i == 0 && slices.Contains(netModels, k) {
			model, mac = k, val
			if mac != "" && !macRe.MatchString(mac) {
				return "", "", nil, fmt.Errorf("format error\nmacaddr: value does not look like a valid MAC address")
			}
			continue
		}
		if k == "model" {
			model = val
			continue
		}
		if k == "macaddr" {
			mac = val
			continue
		}
		switch k {
		case "bridge", "firewall", "tag", "rate", "queues", "mtu", "link_down", "trunks":
			opts[k] = val
		default:
			return "", "", nil, fmt.Errorf("format error\n%s: property is not defined in schema", k)
		}
	}
	if model == "" {
		return "", "", nil, fmt.Errorf("format error\nmodel: property is missing and it is not optional")
	}
	if !slices.Contains(netModels, model) {
		return "", "", nil, fmt.Errorf("format error\nmodel: value '%s' does not have a value in the enumeration '%s'", model, strings.Join(netModels, ", "))
	}
	if t, ok := opts["tag"]; ok {
		if n, e := strconv.Atoi(t); e != nil || n < 1 || n > 4094 {
			return "", "", nil, fmt.Errorf("format error\ntag: value must have a maximum value of 4094")
		}
	}
	return model, mac, opts, nil
}

func verifyNet(v string) error {
	_, _, _, err := ParseNet(v)
	return err
}

// IPConfig is a parsed ipconfigN value.
type IPConfig struct {
	IP, GW, IP6, GW6 string
}

// ParseIPConfig parses "ip=dhcp,ip6=auto" / "ip=10.0.0.5/24,gw=10.0.0.1".
func ParseIPConfig(v string) (IPConfig, error) {
	var c IPConfig
	for _, part := range strings.Split(v, ",") {
		if part == "" {
			continue
		}
		k, val, ok := strings.Cut(part, "=")
		if !ok {
			return c, fmt.Errorf("format error\n%s: property is not defined in schema", part)
		}
		switch k {
		case "ip":
			if val != "dhcp" {
				ip, _, err := net.ParseCIDR(val)
				if err != nil || ip.To4() == nil {
					return c, fmt.Errorf("format error\nip: invalid format - value does not look like a valid ipv4 network configuration")
				}
			}
			c.IP = val
		case "gw":
			if ip := net.ParseIP(val); ip == nil || ip.To4() == nil {
				return c, fmt.Errorf("format error\ngw: invalid format - value does not look like a valid IPv4 address")
			}
			c.GW = val
		case "ip6":
			if val != "dhcp" && val != "auto" {
				ip, _, err := net.ParseCIDR(val)
				if err != nil || ip.To4() != nil {
					return c, fmt.Errorf("format error\nip6: invalid format - value does not look like a valid ipv6 network configuration")
				}
			}
			c.IP6 = val
		case "gw6":
			if ip := net.ParseIP(val); ip == nil || ip.To4() != nil {
				return c, fmt.Errorf("format error\ngw6: invalid format - value does not look like a valid IPv6 address")
			}
			c.GW6 = val
		default:
			return c, fmt.Errorf("format error\n%s: property is not defined in schema", k)
		}
	}
	return c, nil
}

func verifyIPConfig(v string) error {
	_, err := ParseIPConfig(v)
	return err
}

// Drive is a parsed disk/cdrom drive value.
type Drive struct {
	// File is the volume: "local-lvm:vm-101-disk-0", "local-lvm:10" (a
	// new 10 GiB disk), "local-lvm:cloudinit", "none" or "cdrom".
	File string
	Opts map[string]string
	// order keeps the options' order for printing.
	order []string
}

// ParseDrive parses a drive value.
func ParseDrive(v string) (Drive, error) {
	opts, order := PropertyList(v, "file")
	d := Drive{File: opts["file"], Opts: opts}
	delete(d.Opts, "file")
	for _, k := range order {
		if k != "file" {
			d.order = append(d.order, k)
		}
	}
	if d.File == "" {
		return d, fmt.Errorf("format error\nfile: property is missing and it is not optional")
	}
	for k := range d.Opts {
		switch k {
		case "media", "size", "import-from", "format", "discard", "ssd", "cache", "iothread", "backup",
			"replicate", "aio", "serial", "wwn", "ro", "snapshot", "efitype", "pre-enrolled-keys", "version":
		default:
			return d, fmt.Errorf("format error\n%s: property is not defined in schema", k)
		}
	}
	if m, ok := d.Opts["media"]; ok && m != "disk" && m != "cdrom" {
		return d, fmt.Errorf("format error\nmedia: value '%s' does not have a value in the enumeration 'cdrom, disk'", m)
	}
	if s, ok := d.Opts["size"]; ok {
		if _, err := ParseSize(s); err != nil {
			return d, fmt.Errorf("format error\nsize: %v", err)
		}
	}
	return d, nil
}

// String prints the drive back in PVE's order.
func (d Drive) String() string {
	parts := []string{d.File}
	seen := map[string]bool{}
	for _, k := range d.order {
		if v, ok := d.Opts[k]; ok && !seen[k] {
			parts = append(parts, k+"="+v)
			seen[k] = true
		}
	}
	var rest []string
	for k := range d.Opts {
		if !seen[k] {
			rest = append(rest, k)
		}
	}
	slices.Sort(rest)
	for _, k := range rest {
		parts = append(parts, k+"="+d.Opts[k])
	}
	return strings.Join(parts, ",")
}

// Set sets an option, keeping its position if present.
func (d *Drive) Set(k, v string) {
	if _, ok := d.Opts[k]; !ok {
		d.order = append(d.order, k)
	}
	d.Opts[k] = v
}

// IsCDROM reports whether the drive is a cdrom (cloud-init drives are).
func (d Drive) IsCDROM() bool { return d.Opts["media"] == "cdrom" || d.File == "cdrom" }

// IsCloudinit reports whether the drive is a cloud-init drive.
func (d Drive) IsCloudinit() bool {
	_, name, _ := strings.Cut(d.File, ":")
	return name == "cloudinit" || strings.HasSuffix(name, "-cloudinit") || strings.Contains(name, "-cloudinit.")
}

func verifyDrive(v string) error {
	_, err := ParseDrive(v)
	return err
}

var sizeRe = regexp.MustCompile(`^(\d+(?:\.\d+)?)([KMGT])?$`)

// ParseSize parses a PVE disk size ("32G", "3584M", "1.5T"; a bare number
// is bytes).
func ParseSize(s string) (int64, error) {
	m := sizeRe.FindStringSubmatch(s)
	if m == nil {
		return 0, fmt.Errorf("unable to parse size '%s'", s)
	}
	f, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		return 0, err
	}
	mult := map[string]float64{"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}[m[2]]
	return int64(f * mult), nil
}

// formatSize prints bytes as PVE does in drive strings: the largest unit
// that divides it.
func formatSize(b int64) string {
	for _, u := range []struct {
		s string
		n int64
	}{{"T", 1 << 40}, {"G", 1 << 30}, {"M", 1 << 20}, {"K", 1 << 10}} {
		if b >= u.n && b%u.n == 0 {
			return fmt.Sprintf("%d%s", b/u.n, u.s)
		}
	}
	return strconv.FormatInt(b, 10)
}

// FormatSize is formatSize for the CLI simulator.
func FormatSize(b int64) string { return formatSize(b) }
