package proxmox

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// notAnswered is an API request that PVE could not answer: pveproxy
// forwards a request for another node of the cluster to that node, and
// when the node does not answer it replies 595 (AnyEvent::HTTP's
// connection error) or 596 with an empty body (pve-http-server
// proxy_request). go-proxmox parses such replies as success, so a PUT
// without a result (ConfigSync) would report a change that never
// happened; the transport turns them into this error instead.
type notAnswered struct {
	Node   string // the node the request was for ("" if none)
	Status string // "595 No route to host"
}

func (e *notAnswered) Error() string {
	if e.Node != "" {
		return fmt.Sprintf("the Proxmox API could not reach node %s (%s); the node may be offline", e.Node, e.Status)
	}
	return "the Proxmox API did not answer (" + e.Status + ")"
}

// unanswered replaces a reply that is neither an answer nor an error PVE
// itself sends (200, 4xx, 500, 501) by a notAnswered error.
func unanswered(r *http.Request, resp *http.Response) (*http.Response, error) {
	if resp.StatusCode < 502 {
		return resp, nil
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	e := &notAnswered{Status: resp.Status}
	const nodes = "/api2/json/nodes/"
	if i := strings.Index(r.URL.Path, nodes); i >= 0 {
		e.Node, _, _ = strings.Cut(r.URL.Path[i+len(nodes):], "/")
	}
	return nil, e
}

// unreachableNode returns the node a failed request could not reach ("" if
// err is not such a failure).
func unreachableNode(err error) string {
	var e *notAnswered
	if errors.As(err, &e) {
		return e.Node
	}
	return ""
}
