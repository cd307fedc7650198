package testutil

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// JSDir returns testdata/js of this module with its node_modules installed
// (make test-deps runs npm ci there), failing under `make test` and skipping
// otherwise when node or the packages are missing.
func JSDir(t testing.TB) (node, dir string) {
	t.Helper()
	node = RequireBinary(t, "node")
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	dir = filepath.Join(root, "testdata", "js")
	for _, m := range []string{"@noble/curves", "@noble/hashes", "@noble/ciphers", "@scure/bip39"} {
		if _, err := os.Stat(filepath.Join(dir, "node_modules", m, "package.json")); err != nil {
			Unavailable(t, "testdata/js/node_modules/"+m+" is missing (run: make test-deps, or npm ci in testdata/js)")
		}
	}
	return node, dir
}

// RunNode runs a script of testdata/js with stdin and returns its stdout.
func RunNode(t testing.TB, script string, stdin []byte) []byte {
	t.Helper()
	node, dir := JSDir(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, script)
	cmd.Dir = dir
	cmd.Stdin = bytes.NewReader(stdin)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("node %s: %v\n%s", script, err, stderr.String())
	}
	return out
}

// moduleRoot walks up from the working directory to the go.mod.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", os.ErrNotExist
		}
		dir = parent
	}
}
