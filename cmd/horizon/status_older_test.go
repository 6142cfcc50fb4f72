package main

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestStatusAgainstServerWithoutMCSz: `horizon status` still reports a horizon serve
// older than itself, which has no /debug/mcsz; a missing path it needs is an error.
func TestStatusAgainstServerWithoutMCSz(t *testing.T) {
	paths := map[string]string{
		"/debug/clusterz": `{"clusters": [], "secrets": []}`,
		"/debug/networkz": `{}`,
		"/debug/syncz":    `[]`,
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, ok := paths[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(body))
	}))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")

	var out, errOut bytes.Buffer
	if err := run(t.Context(), []string{"status", "--address", addr}, &out, &errOut); err != nil {
		t.Fatalf("status against a server without /debug/mcsz: %v\n%s", err, errOut.String())
	}
	if strings.Contains(out.String(), "conflict") {
		t.Errorf("status printed export conflicts from a server that has none:\n%s", out.String())
	}

	delete(paths, "/debug/syncz")
	out.Reset()
	err := run(t.Context(), []string{"status", "--address", addr}, &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), "/debug/syncz") || !strings.Contains(err.Error(), "404") {
		t.Errorf("status without /debug/syncz = %v, want an error naming the path and 404", err)
	}
}
