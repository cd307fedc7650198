package upgrade

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestUpgradeRequest(t *testing.T) {
	dir := t.TempDir()
	if _, ok, err := TakeRequest(dir); ok || err != nil {
		t.Fatalf("no request: %v %v", ok, err)
	}
	if err := WriteRequest(dir, "v1.4.0"); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(filepath.Join(dir, RequestFile)); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("request file %v %v", st, err)
	}
	v, ok, err := TakeRequest(dir)
	if v != "v1.4.0" || !ok || err != nil {
		t.Fatalf("take: %q %v %v", v, ok, err)
	}
	if _, ok, _ := TakeRequest(dir); ok {
		t.Fatal("a request is taken once")
	}
	if err := WriteRequest(dir, "../../etc/passwd"); err == nil {
		t.Fatal("a path written as a version")
	}
	// Whatever else is in the file is refused, and removed.
	if err := os.WriteFile(filepath.Join(dir, RequestFile), []byte("1.0; rm -rf /\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := TakeRequest(dir); ok || err == nil || !strings.Contains(err.Error(), "ignored") {
		t.Fatalf("bad request: %v %v", ok, err)
	}
	if _, err := os.Stat(filepath.Join(dir, RequestFile)); !os.IsNotExist(err) {
		t.Fatal("a bad request stays")
	}
}
