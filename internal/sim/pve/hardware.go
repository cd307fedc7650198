package pve

import (
	"fmt"
	"strings"
)

// PCIDevice is one PCI function of a node, as GET
// /nodes/{node}/hardware/pci lists it (pve-manager PVE/API2/Hardware/PCI.pm;
// go-proxmox's PCIDevice).
type PCIDevice struct {
	ID         string `json:"id"`    // "0000:01:00.0"
	Class      string `json:"class"` // "0x030000"
	Vendor     string `json:"vendor"`
	VendorName string `json:"vendor_name,omitempty"`
	Device     string `json:"device"`
	DeviceName string `json:"device_name,omitempty"`
	IOMMUGroup int    `json:"iommugroup"`
	Mdev       bool   `json:"mdev,omitempty"`
}

// basePCI are the devices every simulated node has: a host bridge, an
// ISA bridge, a SATA controller and a NIC.
var basePCI = []PCIDevice{
	{ID: "0000:00:00.0", Class: "0x060000", Vendor: "0x8086", VendorName: "Intel Corporation", Device: "0x29c0", DeviceName: "82G33/G31/P35/P31 Express DRAM Controller", IOMMUGroup: 0},
	{ID: "0000:00:1f.0", Class: "0x060100", Vendor: "0x8086", VendorName: "Intel Corporation", Device: "0x2918", DeviceName: "82801IB (ICH9) LPC Interface Controller", IOMMUGroup: 1},
	{ID: "0000:00:1f.2", Class: "0x010601", Vendor: "0x8086", VendorName: "Intel Corporation", Device: "0x2922", DeviceName: "82801IR/IO/IH (ICH9R/DO/DH) 6 port SATA Controller [AHCI mode]", IOMMUGroup: 1},
	{ID: "0000:01:00.0", Class: "0x020000", Vendor: "0x8086", VendorName: "Intel Corporation", Device: "0x1533", DeviceName: "I210 Gigabit Network Connection", IOMMUGroup: 2},
}

// NodePCIData is GET /nodes/{node}/hardware/pci: the node's devices plus
// the GPUs set on it (State.GPUs), without the classes of blacklist
// (prefixes of the class without 0x, ";"-separated; PVE's default is
// "05;06;0b": memory, bridges, processors). PVE requires Sys.Audit or
// Sys.Modify on / (`perm('/', ['Sys.Audit', 'Sys.Modify'], any => 1)`).
func (st *State) NodePCIData(actor, node, blacklist string, defaultBlacklist bool) ([]PCIDevice, error) {
	if err := st.CheckNode(node); err != nil {
		return nil, err
	}
	if err := st.CheckAny(actor, "/", "Sys.Audit", "Sys.Modify"); err != nil {
		return nil, err
	}
	if defaultBlacklist {
		blacklist = "05;06;0b"
	}
	var skip []string
	for _, c := range strings.Split(blacklist, ";") {
		if c = strings.ToLower(strings.TrimSpace(c)); c != "" {
			skip = append(skip, c)
		}
	}
	out := []PCIDevice{}
	for _, d := range append(append([]PCIDevice(nil), basePCI...), st.GPUs[node]...) {
		class := strings.TrimPrefix(strings.ToLower(d.Class), "0x")
		drop := false
		for _, s := range skip {
			drop = drop || strings.HasPrefix(class, s)
		}
		if !drop {
			out = append(out, d)
		}
	}
	return out, nil
}

// AddGPU puts a GPU into node's PCI list (what a host with a graphics or
// accelerator card shows).
func (st *State) AddGPU(node string, d PCIDevice) error {
	if err := st.CheckNode(node); err != nil {
		return err
	}
	if !strings.HasPrefix(d.Class, "0x03") && !strings.HasPrefix(d.Class, "0x12") {
		return fmt.Errorf("class %s is not a display controller (0x03…) or accelerator (0x12…)", d.Class)
	}
	if st.GPUs == nil {
		st.GPUs = map[string][]PCIDevice{}
	}
	st.GPUs[node] = append(st.GPUs[node], d)
	return nil
}
