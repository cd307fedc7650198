package status

import (
	"errors"
	"io"
	"strings"
	"testing"
)

func TestReadEvents(t *testing.T) {
	in := `{"seq":1,"time":"2026-01-02T03:04:05Z","kind":"ready","level":"info","message":"dc-agent ready"}

{"seq":2,"time":"2026-01-02T03:04:06Z","kind":"provisioned","level":"info","contractId":"ab","message":"ok","newField":42}
`
	var got []Event
	err := ReadEvents(strings.NewReader(in), func(ev Event) error { got = append(got, ev); return nil })
	if !errors.Is(err, io.EOF) {
		t.Fatalf("err = %v, want io.EOF at the end of the stream", err)
	}
	if len(got) != 2 || got[1].Kind != EventProvisioned || got[1].ContractID != "ab" || got[0].Seq != 1 {
		t.Fatalf("events = %+v", got)
	}
	for _, bad := range []string{"not json\n", `{"seq":1}` + "\n", `[1]` + "\n"} {
		if err := ReadEvents(strings.NewReader(bad), func(Event) error { return nil }); err == nil || errors.Is(err, io.EOF) {
			t.Errorf("ReadEvents(%q) = %v, want an error", bad, err)
		}
	}
	stop := errors.New("stop")
	if err := ReadEvents(strings.NewReader(in), func(Event) error { return stop }); !errors.Is(err, stop) {
		t.Fatalf("callback error not returned: %v", err)
	}
}

func FuzzReadEvents(f *testing.F) {
	f.Add([]byte(`{"seq":1,"time":"2026-01-02T03:04:05Z","kind":"ready","level":"info","message":"x"}` + "\n"))
	f.Add([]byte("\n\n{}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		_ = ReadEvents(strings.NewReader(string(data)), func(ev Event) error {
			if ev.Kind == "" {
				t.Fatal("event without kind passed")
			}
			return nil
		})
	})
}
