package simkit

import (
	"net/url"
	"testing"
)

func TestPaginate(t *testing.T) {
	for _, c := range []struct {
		query  string
		total  int
		want   Page
		badArg string
	}{
		{"", 45, Page{Number: 1, Per: 20, Last: 3, Total: 45, Lo: 0, Hi: 20}, ""},
		{"page=3", 45, Page{Number: 3, Per: 20, Last: 3, Total: 45, Lo: 40, Hi: 45}, ""},
		{"page=4&per_page=500", 45, Page{Number: 4, Per: 50, Last: 1, Total: 45, Lo: 45, Hi: 45}, ""},
		{"page=9223372036854775807", 45, Page{Number: 9223372036854775807, Per: 20, Last: 3, Total: 45, Lo: 45, Hi: 45}, ""},
		{"", 0, Page{Number: 1, Per: 20, Last: 1}, ""},
		{"page=0", 45, Page{}, "page"},
		{"per_page=x", 45, Page{}, "per_page"},
	} {
		q, _ := url.ParseQuery(c.query)
		got, bad := Paginate(q, c.total, 20, 50)
		if got != c.want || bad != c.badArg {
			t.Errorf("%q of %d: %+v %q, want %+v %q", c.query, c.total, got, bad, c.want, c.badArg)
		}
	}
}

func TestSortedAndFind(t *testing.T) {
	m := map[string]*int{"a": new(int), "b": new(int), "c": new(int)}
	*m["a"], *m["b"], *m["c"] = 3, 1, 2
	s := Sorted(m, func(a, b *int) bool { return *a < *b })
	if len(s) != 3 || s[0] != 1 || s[1] != 2 || s[2] != 3 {
		t.Fatalf("%v", s)
	}
	if p := Find(s, func(v *int) bool { return *v >= 2 }); p == nil || *p != 2 || Find(s, func(v *int) bool { return *v > 3 }) != nil {
		t.Fatalf("find: %v", p)
	}
}
