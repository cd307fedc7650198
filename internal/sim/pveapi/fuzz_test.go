package pveapi

import "testing"

// FuzzParseJSONParams: request bodies are outside input.
func FuzzParseJSONParams(f *testing.F) {
	for _, s := range []string{`{"newid":101,"full":1,"name":"x","storage":"local-lvm"}`, `{"a":true,"b":null,"c":1.5e3}`, `{"x":[1]}`, `[]`, `{`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		m, err := ParseJSONParams(body)
		if err == nil && m == nil {
			t.Fatal("nil map without error")
		}
	})
}
