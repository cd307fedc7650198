package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// FuzzMigrate: for any text that loads, Migrate must succeed (no panic, no
// refusal), its text must load back to the same settings with no old keys
// left, and migrating that again must change nothing. The seed corpus is
// the Rust agent's configs (testdata/rust) and testdata/fuzz/FuzzMigrate.
func FuzzMigrate(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join(rustDir, "*.toml"))
	if len(files) == 0 {
		f.Fatal("no seed configs in " + rustDir)
	}
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse(data)
		if err != nil {
			var le *LoadError
			if !errors.As(err, &le) || len(le.Problems) == 0 {
				t.Fatalf("refusal without problems: %T %v", err, err)
			}
			return
		}
		out, back, err := Migrate(cfg)
		if err != nil {
			t.Fatalf("a config that loads does not migrate: %v\ninput:\n%s", err, data)
		}
		if back.NeedsMigration() {
			t.Fatalf("the migrated config still needs migration: %v\n%s", back.Warnings, out)
		}
		if want := migratedWant(cfg); !reflect.DeepEqual(back, want) {
			t.Fatalf("migration changed the settings:\n got  %+v\n want %+v\ninput:\n%s\nmigrated:\n%s", back, want, data, out)
		}
		out2, _, err := Migrate(back)
		if err != nil || string(out2) != string(out) {
			t.Fatalf("migrating twice changes the text (%v):\n%s\n---\n%s", err, out, out2)
		}
	})
}
