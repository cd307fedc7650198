package pve

import "testing"

// FuzzConfigValue feeds API parameters through the schema checks and the
// drive/net/ipconfig parsers: nothing may panic, and a parsed drive must
// print back to something that parses to the same volume.
func FuzzConfigValue(f *testing.F) {
	for _, s := range [][2]string{
		{"scsi0", "local-lvm:base-9000-disk-0/vm-101-disk-0,size=3584M"},
		{"ide2", "local-lvm:cloudinit,media=cdrom"},
		{"net0", "virtio=BC:24:11:00:00:01,bridge=vmbr0,firewall=1,tag=10"},
		{"ipconfig0", "ip=10.0.0.5/24,gw=10.0.0.1,ip6=auto"},
		{"sshkeys", "ssh-ed25519%20AAAA%20user%40host"},
		{"memory", "current=2048"},
		{"agent", "enabled=1,fstrim_cloned_disks=1,type=virtio"},
		{"cores", "4"},
		{"tags", "dc-agent;x"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, key, value string) {
		if spec, ok := lookupKey(key); ok {
			normalizeParam(spec, value)
		}
		if d, err := ParseDrive(value); err == nil {
			d2, err := ParseDrive(d.String())
			if err != nil || d2.File != d.File {
				t.Fatalf("drive %q printed as %q: %v", value, d.String(), err)
			}
		}
		_, _, _, _ = ParseNet(value)
		_, _ = ParseIPConfig(value)
		_, _ = ParseSize(value)
		_ = ValidateSSHKeys(value)
		_ = AgentEnabled(value)
	})
}
