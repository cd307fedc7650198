package config

import (
	"errors"
	"os"
	"reflect"
	"testing"
)

// FuzzParse decodes arbitrary dc-agent.toml text. It must never panic, every
// refusal is a *LoadError with at least one problem, and a config that loads
// survives Marshal → Parse unchanged (what Save writes, Load reads back).
// The seed corpus (testdata/fuzz/FuzzParse) holds the example, the minimal
// config and the bad inputs of the unit tests.
func FuzzParse(f *testing.F) {
	if b, err := os.ReadFile(examplePath); err == nil {
		f.Add(b)
	}
	f.Add([]byte(minimal))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse(data)
		if err != nil {
			var le *LoadError
			if !errors.As(err, &le) || len(le.Problems) == 0 {
				t.Fatalf("refusal without problems: %T %v", err, err)
			}
			for _, p := range le.Problems {
				if p == "" {
					t.Fatal("empty problem")
				}
			}
			return
		}
		out, err := Marshal(cfg)
		if err != nil {
			t.Fatalf("loaded config does not encode: %v", err)
		}
		back, err := Parse(out)
		if err != nil {
			t.Fatalf("re-encoded config does not load: %v\ninput:\n%s\nencoded:\n%s", err, data, out)
		}
		// Marshal writes the current names: the warnings about old ones go.
		want := *cfg
		want.Warnings, want.legacy.warnings = withoutLegacyWarnings(cfg), nil
		if !reflect.DeepEqual(&want, back) {
			t.Fatalf("round trip changed the config:\n%+v\n%+v\nencoded:\n%s", cfg, back, out)
		}
	})
}
