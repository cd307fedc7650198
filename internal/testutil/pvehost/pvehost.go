// Package pvehost runs a simulated Proxmox VE node for tests: a real sshd
// on loopback whose sessions find the simulated host tools (pve-host-sim)
// on their PATH, acting on a simulated cluster state; plus a server that
// publishes fake cloud images and checksum lists.
package pvehost

import (
	"crypto/sha256"
	"crypto/sha512"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/decent-stuff/dc-agent/internal/sim/pve"
	"github.com/decent-stuff/dc-agent/internal/sim/pvecli"
	"github.com/decent-stuff/dc-agent/internal/testutil"
)

// Build builds cmd/pve-host-sim into dir and returns its path.
// Call it once per test binary (TestMain) and pass the path to
// Start: linking takes a second or two.
func Build(dir string) (string, error) {
	return testutil.BuildBinary(dir, "github.com/decent-stuff/dc-agent/cmd/pve-host-sim", "pve-host-sim")
}

// Options shape a simulated Proxmox VE node.
type Options struct {
	// Binary is the built pve-host-sim (Build).
	Binary string
	// Version is the pve-manager version, "8.x.y" or "9.x.y" (default 9.1.1).
	Version string
	// Node name (default pve1).
	Node string
	// NoTools leaves the Proxmox tools off the session's PATH (a host
	// that is not a Proxmox node).
	NoTools bool
	// Nodes makes the host pve1 of a cluster of pve1..pveN (Node must be
	// "" or pve1); SharedStorage adds the RBD storage every node sees
	// (pve.InitOptions).
	Nodes         int
	SharedStorage bool
}

// Host is a simulated Proxmox VE node: real sshd on loopback whose
// sessions have the simulated qm, pveum, pvesh, pvesm, pveversion and
// virt-customize on their PATH, acting on Store.
type Host struct {
	*testutil.SSHD
	Store    *pve.Store
	StateDir string
	BinDir   string
	Node     string
}

// Start creates the node's state (fast task timing) and its sshd.
func Start(t testing.TB, o Options) *Host {
	t.Helper()
	if o.Version == "" {
		o.Version = "9.1.1"
	}
	if o.Node == "" {
		o.Node = "pve1"
	}
	dir := t.TempDir()
	h := &Host{StateDir: filepath.Join(dir, "state"), BinDir: filepath.Join(dir, "bin"), Node: o.Node}
	timing := pve.FastTiming()
	var err error
	if h.Store, err = pve.Create(h.StateDir, pve.InitOptions{Node: o.Node, Version: o.Version, Timing: &timing, Nodes: o.Nodes, SharedStorage: o.SharedStorage}); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(h.BinDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if !o.NoTools {
		if o.Binary == "" {
			t.Fatal("Options.Binary is required (Build in TestMain)")
		}
		if err := pvecli.Install(h.BinDir, o.Binary); err != nil {
			t.Fatal(err)
		}
	}
	h.SSHD = testutil.StartSSHD(t, testutil.SSHDOptions{Env: map[string]string{
		"PATH": h.BinDir, pvecli.EnvState: h.StateDir, pvecli.EnvNode: o.Node,
	}})
	return h
}

// SetFaults replaces the host tools' injected failures.
func (h *Host) SetFaults(t testing.TB, f pvecli.Faults) {
	t.Helper()
	if err := pvecli.WriteFaults(h.StateDir, f); err != nil {
		t.Fatal(err)
	}
}

// View runs fn on the node's state.
func (h *Host) View(t testing.TB, fn func(st *pve.State)) {
	t.Helper()
	if err := h.Store.View(func(st *pve.State) error { fn(st); return nil }); err != nil {
		t.Fatal(err)
	}
}

// ImageServer serves fake cloud images and their checksum lists at the
// catalog's paths, like cloud-images.ubuntu.com and cloud.debian.org (one
// server stands in for both: point --image-mirror at URL).
type ImageServer struct {
	URL string
	// Downloads counts image downloads (not checksum lists) by path.
	downloads sync.Map
	// Corrupt makes the image bytes differ from the published checksum.
	Corrupt atomic.Bool
	images  map[string][]byte // path -> content
	sums    map[string]string // path -> checksum list
}

// ImageSpec is one image the server publishes.
type ImageSpec struct {
	Path string // "noble/current/noble-server-cloudimg-amd64.img"
	Sums string // checksum list file name beside it
	Algo string // sha256 | sha512
}

// StartImageServer serves the given images on loopback.
func StartImageServer(t testing.TB, specs []ImageSpec) *ImageServer {
	t.Helper()
	s := &ImageServer{images: map[string][]byte{}, sums: map[string]string{}}
	for _, sp := range specs {
		img := FakeQcow2(sp.Path, 3584<<20)
		s.images["/"+sp.Path] = img
		dir := "/" + sp.Path[:strings.LastIndexByte(sp.Path, '/')+1]
		var sum string
		if sp.Algo == "sha512" {
			h := sha512.Sum512(img)
			sum = hex.EncodeToString(h[:])
		} else {
			h := sha256.Sum256(img)
			sum = hex.EncodeToString(h[:])
		}
		file := sp.Path[len(dir)-1:]
		// A realistic list: other files around ours.
		other := strings.Repeat("0", len(sum))
		s.sums[dir+sp.Sums] += fmt.Sprintf("%s *%s-disk-kvm.img\n%s *%s\n%s  %s.manifest\n", other, file, sum, file, other, file)
	}
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if l, ok := s.sums[r.URL.Path]; ok {
			fmt.Fprint(w, l)
			return
		}
		img, ok := s.images[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		n, _ := s.downloads.LoadOrStore(r.URL.Path, new(atomic.Int64))
		n.(*atomic.Int64).Add(1)
		if s.Corrupt.Load() {
			img = append([]byte(nil), img...)
			img[len(img)-1] ^= 0xff
		}
		w.Header().Set("Content-Length", fmt.Sprint(len(img)))
		_, _ = w.Write(img)
	}))
	t.Cleanup(ts.Close)
	s.URL = ts.URL
	return s
}

// Downloads returns how often the image at path was downloaded.
func (s *ImageServer) Downloads(path string) int64 {
	if n, ok := s.downloads.Load("/" + strings.TrimPrefix(path, "/")); ok {
		return n.(*atomic.Int64).Load()
	}
	return 0
}

// FakeQcow2 is a small file with a qcow2 header announcing virtualSize,
// followed by bytes derived from seed (so every image differs).
func FakeQcow2(seed string, virtualSize int64) []byte {
	b := make([]byte, 64<<10)
	copy(b, "QFI\xfb")
	binary.BigEndian.PutUint32(b[4:], 3)
	binary.BigEndian.PutUint64(b[24:], uint64(virtualSize))
	h := sha256.Sum256([]byte(seed))
	rng := rand.New(rand.NewChaCha8(h))
	for i := 104; i < len(b); i++ {
		b[i] = byte(rng.Uint32())
	}
	return b
}
