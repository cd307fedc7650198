package testutil

import (
	"context"
	"io"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestDockerdStartImportStop(t *testing.T) {
	RequireBinary(t, "dockerd")
	d, err := StartDockerd()
	if err != nil {
		if Integration() {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	pid := d.cmd.Process.Pid
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := d.ImportBusybox(ctx, "dc-test/busybox:1"); err != nil {
		d.Stop()
		t.Fatal(err)
	}
	resp, err := d.HTTPClient().Get("http://docker/images/dc-test/busybox:1/json")
	if err != nil {
		d.Stop()
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "sleep 2147483647") {
		d.Stop()
		t.Fatalf("image: %s %s", resp.Status, body)
	}
	if err := d.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pid, 0); err == nil {
		t.Fatalf("dockerd %d still runs after Stop", pid)
	}
	if _, err := os.Stat(d.Dir); !os.IsNotExist(err) {
		t.Fatalf("%s not removed: %v", d.Dir, err)
	}
}
