package clusterregistry

import (
	"net/http"
	"strings"
	"sync/atomic"
)

// What a cluster's client sends its API server, counted by verb and outcome. The
// counts belong to the cluster ID: a credential rotation's new client adds to them,
// and they go when the cluster is removed.

// RequestVerb is what a request to an API server does, as Horizon counts it.
type RequestVerb string

// The verbs requests are counted under: a fixed set, so metric labels stay bounded.
const (
	VerbList  RequestVerb = "list"  // GET of a collection
	VerbWatch RequestVerb = "watch" // GET with watch=true (counted when the watch starts)
	VerbGet   RequestVerb = "get"   // any other GET: one object, discovery, /version
	VerbOther RequestVerb = "other" // every other method
)

// RequestCode is the outcome of a request: the class of its HTTP status, or "error"
// when no response came (refused, reset, timed out, cancelled).
type RequestCode string

// The outcomes requests are counted under.
const (
	Code2xx   RequestCode = "2xx"
	Code3xx   RequestCode = "3xx"
	Code4xx   RequestCode = "4xx"
	Code5xx   RequestCode = "5xx"
	CodeError RequestCode = "error" // no response, or a status outside 200-599
)

// RequestVerbs and RequestCodes list every label value, in order.
var (
	RequestVerbs = []RequestVerb{VerbList, VerbWatch, VerbGet, VerbOther}
	RequestCodes = []RequestCode{Code2xx, Code3xx, Code4xx, Code5xx, CodeError}
)

// APIRequests counts a cluster's API requests: verb → code → requests. Zero counts
// are left out.
type APIRequests map[RequestVerb]map[RequestCode]uint64

// Total is the number of requests counted.
func (a APIRequests) Total() uint64 {
	var n uint64
	for _, codes := range a {
		for _, v := range codes {
			n += v
		}
	}
	return n
}

// Failed is the number of requests that got no 2xx answer.
func (a APIRequests) Failed() uint64 {
	var n uint64
	for _, codes := range a {
		for code, v := range codes {
			if code != Code2xx {
				n += v
			}
		}
	}
	return n
}

// requestCounts is the live counter behind APIRequests; safe for concurrent use.
type requestCounts struct {
	n [4][5]atomic.Uint64 // [verb][code], in the order of RequestVerbs and RequestCodes
}

func (r *requestCounts) snapshot() APIRequests {
	out := APIRequests{}
	for v := range r.n {
		for c := range r.n[v] {
			if n := r.n[v][c].Load(); n > 0 {
				verb := RequestVerbs[v]
				if out[verb] == nil {
					out[verb] = map[RequestCode]uint64{}
				}
				out[verb][RequestCodes[c]] = n
			}
		}
	}
	return out
}

// wrap returns a transport that counts every request rt sends; it is a
// rest.Config WrapTransport.
func (r *requestCounts) wrap(rt http.RoundTripper) http.RoundTripper {
	return &countingTransport{next: rt, counts: r}
}

type countingTransport struct {
	next   http.RoundTripper
	counts *requestCounts
}

func (t *countingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	v := verbIndex(req)
	resp, err := t.next.RoundTrip(req)
	c := 4 // error
	if err == nil && resp.StatusCode >= 200 && resp.StatusCode < 600 {
		c = resp.StatusCode/100 - 2
	}
	t.counts.n[v][c].Add(1)
	return resp, err
}

// WrappedRoundTripper lets client-go's debugging helpers see the transport below.
func (t *countingTransport) WrappedRoundTripper() http.RoundTripper { return t.next }

// verbIndex classifies req as RequestVerbs[i]. A GET whose path names a resource
// collection (/api/v1/pods, /api/v1/namespaces/ns/pods,
// /apis/discovery.k8s.io/v1/namespaces/ns/endpointslices, /api/v1/namespaces) is a
// list, or a watch with watch=true; any other GET is a get.
func verbIndex(req *http.Request) int {
	if req.Method != http.MethodGet {
		return 3
	}
	if w := req.URL.Query().Get("watch"); w == "true" || w == "1" {
		return 1
	}
	if isCollection(req.URL.Path) {
		return 0
	}
	return 2
}

// isCollection reports whether path names a collection of resources.
func isCollection(path string) bool {
	segs := strings.Split(strings.Trim(path, "/"), "/")
	switch {
	case len(segs) >= 2 && segs[0] == "api":
		segs = segs[2:] // api, version
	case len(segs) >= 3 && segs[0] == "apis":
		segs = segs[3:] // apis, group, version
	default:
		return false
	}
	if len(segs) >= 3 && segs[0] == "namespaces" {
		segs = segs[2:] // a namespaced resource
	}
	return len(segs) == 1 && segs[0] != ""
}
