package clusterregistry

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"reflect"
	"testing"
)

type fakeTransport struct {
	code int
	err  error
}

func (f fakeTransport) RoundTrip(*http.Request) (*http.Response, error) {
	if f.err != nil {
		return nil, f.err
	}
	return &http.Response{StatusCode: f.code, Body: http.NoBody}, nil
}

// TestRequestClassification checks the verb and outcome every kind of request is
// counted under: whatever the path or status, one of the fixed label values.
func TestRequestClassification(t *testing.T) {
	tests := []struct {
		name   string
		method string
		url    string
		code   int
		err    error
		want   APIRequests
	}{
		{name: "list pods", method: "GET", url: "/api/v1/pods?limit=500", code: 200, want: APIRequests{VerbList: {Code2xx: 1}}},
		{name: "list namespaced slices", method: "GET", url: "/apis/discovery.k8s.io/v1/namespaces/ns/endpointslices", code: 200, want: APIRequests{VerbList: {Code2xx: 1}}},
		{name: "list namespaces", method: "GET", url: "/api/v1/namespaces", code: 403, want: APIRequests{VerbList: {Code4xx: 1}}},
		{name: "watch", method: "GET", url: "/api/v1/namespaces/ns/services?watch=true&resourceVersion=5", code: 200, want: APIRequests{VerbWatch: {Code2xx: 1}}},
		{name: "get a namespace", method: "GET", url: "/api/v1/namespaces/istio-system", code: 404, want: APIRequests{VerbGet: {Code4xx: 1}}},
		{name: "get a pod", method: "GET", url: "/api/v1/namespaces/ns/pods/p", code: 500, want: APIRequests{VerbGet: {Code5xx: 1}}},
		{name: "discovery", method: "GET", url: "/apis", code: 200, want: APIRequests{VerbGet: {Code2xx: 1}}},
		{name: "version", method: "GET", url: "/version", code: 200, want: APIRequests{VerbGet: {Code2xx: 1}}},
		{name: "group version", method: "GET", url: "/apis/discovery.k8s.io/v1", code: 200, want: APIRequests{VerbGet: {Code2xx: 1}}},
		{name: "create", method: "POST", url: "/apis/authentication.k8s.io/v1/tokenreviews", code: 201, want: APIRequests{VerbOther: {Code2xx: 1}}},
		{name: "redirect", method: "GET", url: "/api/v1/pods", code: 302, want: APIRequests{VerbList: {Code3xx: 1}}},
		{name: "odd status", method: "GET", url: "/api/v1/pods", code: 999, want: APIRequests{VerbList: {CodeError: 1}}},
		{name: "no answer", method: "GET", url: "/api/v1/pods?watch=1", err: errors.New("connection refused"), want: APIRequests{VerbWatch: {CodeError: 1}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var counts requestCounts
			rt := counts.wrap(fakeTransport{code: tt.code, err: tt.err})
			resp, err := rt.RoundTrip(httptest.NewRequest(tt.method, "https://example.invalid"+tt.url, nil))
			if err == nil {
				resp.Body.Close()
			}
			if !errors.Is(err, tt.err) {
				t.Errorf("err = %v, want %v", err, tt.err)
			}
			if got := counts.snapshot(); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("counted %v, want %v", got, tt.want)
			}
		})
	}
}
