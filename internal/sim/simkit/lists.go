package simkit

import (
	"net/url"
	"sort"
	"strconv"
)

// Sorted returns copies of the values of m, sorted by less.
func Sorted[K comparable, V any](m map[K]*V, less func(a, b *V) bool) []V {
	out := make([]V, 0, len(m))
	for _, v := range m {
		out = append(out, *v)
	}
	sort.Slice(out, func(i, j int) bool { return less(&out[i], &out[j]) })
	return out
}

// Find returns the first of items that match accepts (nil: none).
func Find[T any](items []T, match func(*T) bool) *T {
	for i := range items {
		if match(&items[i]) {
			return &items[i]
		}
	}
	return nil
}

// QueryInt reads the query parameter name of q as a positive integer, def
// if it is absent; ok is false if it is not one.
func QueryInt(q url.Values, name string, def int) (n int, ok bool) {
	v := q.Get(name)
	if v == "" {
		return def, true
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		return 0, false
	}
	return n, true
}

// Page is one page of a page-numbered list (DigitalOcean, Hetzner Cloud):
// its number, the items per page, the last page's number, the number of
// items in all, and the page's items as items[Lo:Hi].
type Page struct {
	Number, Per, Last, Total int
	Lo, Hi                   int
}

// Paginate reads the page and per_page parameters of q (page 1 and def
// per page if absent, at most maxPer per page) for a list of total items.
// bad names the parameter that is not a positive integer ("": none).
func Paginate(q url.Values, total, def, maxPer int) (p Page, bad string) {
	n, ok := QueryInt(q, "page", 1)
	if !ok {
		return Page{}, "page"
	}
	per, ok := QueryInt(q, "per_page", def)
	if !ok {
		return Page{}, "per_page"
	}
	per = min(per, maxPer)
	p = Page{Number: n, Per: per, Last: max(1, (total+per-1)/per), Total: total, Lo: total, Hi: total}
	if n <= p.Last {
		p.Lo = (n - 1) * per
		p.Hi = min(p.Lo+per, total)
	}
	return p, ""
}
