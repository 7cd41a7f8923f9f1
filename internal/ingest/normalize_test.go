package ingest_test

import (
	"testing"

	"github.com/weft-mesh/weft/internal/ingest"
)

// TestNormalizePath: every spelling of a path that the proxy turns into
// the same request path is matched as that path.
func TestNormalizePath(t *testing.T) {
	for in, want := range map[string]string{
		"/admin":               "/admin",
		"/api/*":               "/api/*",
		"/api/":                "/api/",
		"/admin/../secret":     "/secret",
		"/a//b":                "/a/b",
		"/%2e%2e/x":            "/x",
		"/a/%2E/b":             "/a/b",
		"/a%2Fb":               "/a/b",
		"/a%2fb/*":             "/a/b/*",
		"/a%5Cb":               "/a/b",
		"/a\\b":                "/a/b",
		"/a/b/..":              "/a/",
		"/a/./":                "/a/",
		"/pkg.Service/Method":  "/pkg.Service/Method",
		"/files/a%20b":         "/files/a%20b",
		"/x/..%2f..%2fadmin/*": "/admin/*",
	} {
		if got := ingest.NormalizePath(in); got != want {
			t.Errorf("NormalizePath(%q) = %q, want %q", in, got, want)
		}
	}
}
