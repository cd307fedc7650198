package setup

import (
	"bufio"
	"fmt"
	"regexp"
	"sort"
	"strings"
)

// CloudImage is an OS cloud image a template is built from.
type CloudImage struct {
	// Name is what contracts and the config call it ("ubuntu-24.04").
	Name string
	// Title is shown to people.
	Title string
	// Path is the image's path under BaseURL (and under a mirror).
	Path string
	// Sums is the checksum list's file name beside the image.
	Sums string
	// Algo is "sha256" or "sha512" (Debian publishes only SHA512SUMS).
	Algo string
	// BaseURL is the publisher's download root.
	BaseURL string
	// SizeMB is roughly how much is downloaded, for the wizard.
	SizeMB int
}

// File is the image's file name.
func (c CloudImage) File() string { return c.Path[strings.LastIndexByte(c.Path, '/')+1:] }

// URLs returns the image and checksum list URLs, from mirror if set.
func (c CloudImage) URLs(mirror string) (image, sums string) {
	base := strings.TrimSuffix(c.BaseURL, "/")
	if mirror != "" {
		base = strings.TrimSuffix(mirror, "/")
	}
	dir := c.Path[:strings.LastIndexByte(c.Path, '/')+1]
	return base + "/" + c.Path, base + "/" + dir + c.Sums
}

// Slug is the name as a VM-name-safe word ("ubuntu-2404").
func (c CloudImage) Slug() string { return strings.ReplaceAll(c.Name, ".", "") }

// Images is the catalog of templates setup can build.
var Images = []CloudImage{
	{Name: "ubuntu-24.04", Title: "Ubuntu 24.04 LTS (Noble)", Path: "noble/current/noble-server-cloudimg-amd64.img", Sums: "SHA256SUMS", Algo: "sha256", BaseURL: "https://cloud-images.ubuntu.com", SizeMB: 600},
	{Name: "ubuntu-22.04", Title: "Ubuntu 22.04 LTS (Jammy)", Path: "jammy/current/jammy-server-cloudimg-amd64.img", Sums: "SHA256SUMS", Algo: "sha256", BaseURL: "https://cloud-images.ubuntu.com", SizeMB: 650},
	{Name: "debian-12", Title: "Debian 12 (Bookworm)", Path: "bookworm/latest/debian-12-genericcloud-amd64.qcow2", Sums: "SHA512SUMS", Algo: "sha512", BaseURL: "https://cloud.debian.org/images/cloud", SizeMB: 350},
}

// DefaultTemplates are built when no --templates are given.
var DefaultTemplates = []string{"ubuntu-24.04"}

// LookupImage finds a catalog image by name.
func LookupImage(name string) (CloudImage, bool) {
	for _, c := range Images {
		if c.Name == name {
			return c, true
		}
	}
	return CloudImage{}, false
}

// ImageNames lists the catalog's names.
func ImageNames() []string {
	var n []string
	for _, c := range Images {
		n = append(n, c.Name)
	}
	return n
}

// ParseTemplateList parses "ubuntu-24.04,debian-12": known names, no
// duplicates, in catalog order.
func ParseTemplateList(s string) ([]string, error) {
	seen := map[string]bool{}
	for _, n := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' }) {
		if _, ok := LookupImage(n); !ok {
			return nil, fmt.Errorf("unknown template %q; choose from %s", n, strings.Join(ImageNames(), ", "))
		}
		seen[n] = true
	}
	if len(seen) == 0 {
		return nil, fmt.Errorf("no templates given; choose from %s", strings.Join(ImageNames(), ", "))
	}
	var out []string
	for _, c := range Images {
		if seen[c.Name] {
			out = append(out, c.Name)
		}
	}
	return out, nil
}

var hexRe = regexp.MustCompile(`^[0-9a-f]+$`)

// ParseChecksums finds file's checksum in a SHA256SUMS/SHA512SUMS list
// (coreutils format "<hex> *file" or "<hex>  file", or BSD format
// "SHA256 (file) = <hex>"). hexLen is 64 or 128.
func ParseChecksums(list, file string, hexLen int) (string, error) {
	var found []string
	sc := bufio.NewScanner(strings.NewReader(list))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		var sum, name string
		if i := strings.Index(line, ") = "); i > 0 && strings.Contains(line[:i], " (") {
			j := strings.Index(line, " (")
			name, sum = line[j+2:i], line[i+4:]
		} else {
			f := strings.SplitN(line, " ", 2)
			if len(f) != 2 {
				continue
			}
			sum, name = f[0], strings.TrimLeft(f[1], " ")
			name = strings.TrimPrefix(name, "*")
		}
		name = strings.TrimPrefix(name, "./")
		sum = strings.ToLower(sum)
		if name == file {
			if len(sum) != hexLen || !hexRe.MatchString(sum) {
				return "", fmt.Errorf("checksum list has a malformed entry for %s", file)
			}
			found = append(found, sum)
		}
	}
	if err := sc.Err(); err != nil {
		return "", fmt.Errorf("read checksum list: %w", err)
	}
	sort.Strings(found)
	found = uniq(found)
	switch len(found) {
	case 0:
		return "", fmt.Errorf("checksum list has no entry for %s", file)
	case 1:
		return found[0], nil
	default:
		return "", fmt.Errorf("checksum list has conflicting entries for %s", file)
	}
}

func uniq(s []string) []string {
	var out []string
	for i, v := range s {
		if i == 0 || v != s[i-1] {
			out = append(out, v)
		}
	}
	return out
}

// parseSumOutput reads the hash from `sha256sum FILE` output.
func parseSumOutput(out string, hexLen int) (string, error) {
	f := strings.Fields(out)
	if len(f) == 0 || len(f[0]) != hexLen || !hexRe.MatchString(f[0]) {
		return "", fmt.Errorf("unexpected checksum output %q", truncate(strings.TrimSpace(out), 100))
	}
	return f[0], nil
}
