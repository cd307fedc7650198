package pve

import (
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// StorageOnNode reports whether storage sid is usable on node.
func (st *State) StorageOnNode(sid, node string) bool {
	s := st.Storages[sid]
	if s == nil || s.Disabled {
		return false
	}
	return len(s.Nodes) == 0 || slices.Contains(s.Nodes, node)
}

// StorageUsed is what volumes take from a storage on a node.
func (st *State) StorageUsed(sid, node string) int64 {
	s := st.Storages[sid]
	if s == nil {
		return 0
	}
	var used int64
	for _, v := range st.Volumes {
		if v.Storage == sid && (s.Shared || v.Node == node) {
			used += v.AllocBytes
		}
	}
	return used
}

// StorageTotal is the capacity of a storage on a node.
func (st *State) StorageTotal(sid, node string) int64 {
	s := st.Storages[sid]
	if s == nil {
		return 0
	}
	if t, ok := s.NodeTotalBytes[node]; ok && !s.Shared {
		return t
	}
	return s.TotalBytes
}

// StorageAvail is the free capacity of a storage on a node.
func (st *State) StorageAvail(sid, node string) int64 {
	return max(0, st.StorageTotal(sid, node)-st.StorageUsed(sid, node))
}

// SetStorageCapacity changes a storage's size on every node (a full
// storage is one whose capacity is used up).
func (st *State) SetStorageCapacity(sid string, totalBytes int64) error {
	s := st.Storages[sid]
	if s == nil {
		return Fail("storage '%s' does not exist", sid)
	}
	s.TotalBytes = totalBytes
	s.NodeTotalBytes = nil
	return nil
}

// SetNodeStorageCapacity changes the size of a local storage on one node.
func (st *State) SetNodeStorageCapacity(sid, node string, totalBytes int64) error {
	s := st.Storages[sid]
	if s == nil {
		return Fail("storage '%s' does not exist", sid)
	}
	if s.Shared {
		return Fail("storage '%s' is shared: its size is the same on every node", sid)
	}
	if err := st.CheckNode(node); err != nil {
		return err
	}
	if s.NodeTotalBytes == nil {
		s.NodeTotalBytes = map[string]int64{}
	}
	s.NodeTotalBytes[node] = totalBytes
	return nil
}

// storageThin: linked clones and resizes on these allocate lazily.
func storageThin(typ string) bool { return typ == "lvmthin" || typ == "zfspool" || typ == "rbd" }

// storageFileBased storages keep images as files (raw/qcow2).
func storageFileBased(typ string) bool { return typ == "dir" || typ == "nfs" || typ == "cifs" }

// storageCanLink reports whether linked clones work on a storage type.
func storageCanLink(typ string) bool { return typ != "lvm" }

// errNoSpace is the error of an allocation that does not fit, worded as
// LVM says it.
func (st *State) errNoSpace(sid, node, volname string, need int64, verb string) error {
	s := st.Storages[sid]
	if i := strings.LastIndex(volname, "/"); i >= 0 {
		volname = volname[i+1:]
	}
	avail := st.StorageAvail(sid, node)
	const extent = 4 << 20
	switch {
	case s != nil && (s.Type == "lvmthin" || s.Type == "lvm"):
		return fmt.Errorf("%s '%s/%s' error:   Volume group \"%s\" has insufficient free space (%d extents): %d required.",
			verb, s.VGName, volname, s.VGName, avail/extent, (need+extent-1)/extent)
	case s != nil && s.Type == "zfspool":
		return fmt.Errorf("zfs error: cannot create '%s': out of space", volname)
	default:
		return fmt.Errorf("unable to create image: qemu-img: %s: Could not resize file: No space left on device", volname)
	}
}

// nextDiskName picks the next free disk name of vmid on a storage.
func (st *State) nextDiskName(sid string, vmid int, prefix string) string {
	s := st.Storages[sid]
	for i := 0; ; i++ {
		name := fmt.Sprintf("%s-%d-disk-%d", prefix, vmid, i)
		if s != nil && storageFileBased(s.Type) {
			name = fmt.Sprintf("%d/%s-%d-disk-%d.qcow2", vmid, prefix, vmid, i)
		}
		taken := false
		for _, v := range st.Volumes {
			if v.Storage == sid && (v.Name == name || strings.HasSuffix(v.Name, "/"+name)) {
				taken = true
				break
			}
		}
		if !taken {
			return name
		}
	}
}

// allocVolume creates a volume after checking capacity.
func (st *State) allocVolume(node, sid, name string, vmid int, size, alloc int64) (*Volume, error) {
	if alloc > st.StorageAvail(sid, node) {
		return nil, st.errNoSpace(sid, node, name, alloc, "lvcreate")
	}
	v := st.addVolume(node, sid, name, vmid, size)
	v.AllocBytes = alloc
	return v, nil
}

func (st *State) addVolume(node, sid, name string, vmid int, size int64) *Volume {
	v := &Volume{VolID: sid + ":" + name, Storage: sid, Node: node, Name: name, VMID: vmid, SizeBytes: size, AllocBytes: size}
	if s := st.Storages[sid]; s != nil && storageFileBased(s.Type) {
		v.Format = "qcow2"
		if strings.HasSuffix(name, ".raw") {
			v.Format = "raw"
		}
	} else {
		v.Format = "raw"
	}
	st.Volumes[v.VolID] = v
	return v
}

// freeVolume removes a volume; linked clones of a base volume keep it.
func (st *State) freeVolume(volid string) error {
	v := st.Volumes[volid]
	if v == nil {
		return nil
	}
	for _, o := range st.Volumes {
		if o != v && o.Storage == v.Storage && strings.HasPrefix(o.Name, v.Name+"/") {
			return fmt.Errorf("volume '%s' is in use by linked clone '%s'", volid, o.VolID)
		}
	}
	delete(st.Volumes, volid)
	return nil
}

// StorageStatusData is a storage's entry in GET /nodes/{node}/storage.
func (st *State) StorageStatusData(sid, node string) map[string]any {
	s := st.Storages[sid]
	used := st.StorageUsed(sid, node)
	total := st.StorageTotal(sid, node)
	avail := max(0, total-used)
	frac := 0.0
	if total > 0 {
		frac = float64(used) / float64(total)
	}
	enabled := 1
	if s.Disabled {
		enabled = 0
	}
	shared := 0
	if s.Shared {
		shared = 1
	}
	return map[string]any{
		"storage": sid, "type": s.Type, "content": strings.Join(s.Content, ","), "active": 1, "enabled": enabled,
		"shared": shared, "total": total, "used": used, "avail": avail, "used_fraction": frac,
	}
}

// StorageIDs lists the storages, sorted.
func (st *State) StorageIDs() []string {
	out := make([]string, 0, len(st.Storages))
	for id := range st.Storages {
		out = append(out, id)
	}
	sort.Strings(out)
	return out
}

// newDiskRe is qemu-server's NEW_DISK_RE: "storage:size" allocates.
var newDiskRe = regexp.MustCompile(`^(([^/:\s]+):)?(\d+(\.\d+)?)$`)

// ImageVirtualSize is the virtual size of a disk image file: from the
// header of a qcow2 image, else the file size (raw).
func ImageVirtualSize(path string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, fmt.Errorf("could not get size of %s: %w", path, err)
	}
	defer f.Close()
	hdr := make([]byte, 32)
	if n, _ := io.ReadFull(f, hdr); n == 32 && string(hdr[:4]) == "QFI\xfb" {
		return int64(binary.BigEndian.Uint64(hdr[24:32])), nil
	}
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	return fi.Size(), nil
}

// ImportDisk imports a host image file as a new unused disk of a VM
// (`qm disk import`). It returns the new volume id.
func (st *State) ImportDisk(actor, node string, vmid int, file, sid string) (string, error) {
	vm, err := st.vmOn(node, vmid)
	if err != nil {
		return "", err
	}
	if err := st.Check(actor, fmt.Sprintf("/vms/%d", vmid), "VM.Config.Disk"); err != nil {
		return "", err
	}
	if err := st.Check(actor, "/storage/"+sid, "Datastore.AllocateSpace"); err != nil {
		return "", err
	}
	if !st.StorageOnNode(sid, node) {
		return "", Fail("storage '%s' does not exist", sid)
	}
	if l := vm.Lock(); l != "" {
		return "", Fail("VM %d is locked (%s)", vmid, l)
	}
	size, err := ImageVirtualSize(file)
	if err != nil {
		return "", Fail("%v", err)
	}
	v, err := st.allocVolume(node, sid, st.nextDiskName(sid, vmid, "vm"), vmid, size, size)
	if err != nil {
		return "", Fail("%v", err)
	}
	vm.Config[st.nextUnused(vm)] = v.VolID
	return v.VolID, nil
}

func (st *State) nextUnused(vm *VM) string {
	for i := 0; ; i++ {
		k := "unused" + strconv.Itoa(i)
		if _, ok := vm.Config[k]; !ok {
			return k
		}
	}
}
