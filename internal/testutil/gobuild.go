package testutil

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
)

// The build configuration shared by `make vet`, the binaries tests build
// here and `make release` (scripts/release.sh) for this machine: static
// (CGO_ENABLED=0) and -trimpath. One configuration means a fresh CI compiles
// the dependency tree once for all three instead of once each (cgo and
// -trimpath change every package's build). Helper binaries are never built
// with -race: they run as separate processes.
var (
	StaticBuildEnv   = []string{"CGO_ENABLED=0", "GOTOOLCHAIN=local"}
	StaticBuildFlags = []string{"-trimpath"}
)

// TestBuildTags are the build tags of the binaries tests run: testhooks
// gives `dc-agent run` the test suite's hidden flags (--time-scale,
// --crash-at, --debug-hang-on-sigusr2; cmd/dc-agent/testhooks.go), which
// release binaries lack. Only the packages with tagged files build
// differently; the rest of the tree is shared with vet and release builds.
const TestBuildTags = "testhooks"

// BuildBinary compiles the main package pkg (an import path, or a directory
// like "." or "./cmd/dc-agent" relative to the caller's working directory)
// into dir and returns the executable's path. It is meant for TestMain (or
// a sync.Once), so that a package's tests run the real binary, built once
// per test process, in the StaticBuildEnv configuration with
// TestBuildTags.
func BuildBinary(dir, pkg, name string) (string, error) {
	goTool := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(goTool); err != nil {
		goTool = "go"
	}
	out := filepath.Join(dir, name)
	args := append(append([]string{"build"}, StaticBuildFlags...), "-tags", TestBuildTags, "-o", out, pkg)
	cmd := exec.Command(goTool, args...)
	cmd.Env = append(os.Environ(), StaticBuildEnv...)
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s: %v\n%s", pkg, err, b)
	}
	return out, nil
}

// Binary is a main package a test package runs, and where TestMain puts
// the path of its build.
type Binary struct {
	Pkg, Name string
	Path      *string
}

// RunWithBinaries is a TestMain that builds bins (BuildBinary, into a temp
// directory), runs the package's tests, removes the builds and exits with
// the tests' code; a failed build exits 1 before any test runs.
func RunWithBinaries(m *testing.M, bins ...Binary) { RunWithBinariesAnd(m, nil, bins...) }

// RunWithBinariesAnd is RunWithBinaries for a package with fixtures of its
// own: setup (when not nil) runs while the binaries build, and the
// teardown it returns after the tests.
func RunWithBinariesAnd(m *testing.M, setup func() (teardown func()), bins ...Binary) {
	dir, err := os.MkdirTemp("", "dc-test-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	built := make(chan error, 1)
	go func() {
		for _, b := range bins {
			var err error
			if *b.Path, err = BuildBinary(dir, b.Pkg, b.Name); err != nil {
				built <- err
				return
			}
		}
		built <- nil
	}()
	teardown := func() {}
	if setup != nil {
		teardown = setup()
	}
	code := 1
	if err := <-built; err != nil {
		fmt.Fprintln(os.Stderr, err)
	} else {
		code = m.Run()
	}
	teardown()
	os.RemoveAll(dir)
	os.Exit(code)
}
