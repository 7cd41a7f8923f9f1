package main

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

func TestInitWritesFilesAndPlan(t *testing.T) {
	dir := t.TempDir()
	boot, sds, self := filepath.Join(dir, "envoy.json"), filepath.Join(dir, "sds.json"), filepath.Join(dir, "weft-init")
	env := map[string]string{"BOOT": `{"node":{"id":"cart-1.shop"}}`, "SDS": `{"resources":[]}`}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	var out bytes.Buffer
	args := []string{
		"--inbound-port=15006", "--outbound-port=15001", "--proxy-uid=1337",
		"--exclude-inbound-ports=22", "--exclude-outbound-cidrs=169.254.169.254/32",
		"--file-from-env=BOOT=" + boot, "--file-from-env=SDS=" + sds,
		"--copy-self=" + self, "--dry-run",
	}
	// Twice: a restarted init container must succeed over its own output.
	for range 2 {
		out.Reset()
		if err := run(t.Context(), args, lookup, &out); err != nil {
			t.Fatal(err)
		}
	}

	for path, want := range map[string]string{boot: env["BOOT"], sds: env["SDS"]} {
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != want {
			t.Errorf("%s = %q, want %q", path, got, want)
		}
		assertMode(t, path, 0o444)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	want, _ := os.ReadFile(exe)
	got, _ := os.ReadFile(self)
	if !bytes.Equal(got, want) {
		t.Error("copied executable differs from the running one")
	}
	assertMode(t, self, 0o555)
	if leftovers, _ := filepath.Glob(filepath.Join(dir, ".*")); len(leftovers) != 0 {
		t.Errorf("temporary files left behind: %v", leftovers)
	}

	plan := out.String()
	for _, want := range []string{
		"table inet weft",
		"tcp dport 22 return",
		"ip daddr 169.254.169.254/32 return",
		"meta skuid 1337 return",
		"redirect to :15006",
		"redirect to :15001",
	} {
		if !strings.Contains(plan, want) {
			t.Errorf("dry-run plan lacks %q:\n%s", want, plan)
		}
	}
}

func assertMode(t *testing.T, path string, want os.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != want {
		t.Errorf("%s has mode %v, want %v", path, fi.Mode().Perm(), want)
	}
}

func TestInitRejectsBadInput(t *testing.T) {
	none := func(string) (string, bool) { return "", false }
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--exclude-outbound-cidrs=10.1.2.3/8", "--dry-run"}, "the network is 10.0.0.0/8"},
		{[]string{"--exclude-inbound-ports=http", "--dry-run"}, `"http" is not a port number`},
		{[]string{"--inbound-port=15001", "--dry-run"}, "must differ"},
		{[]string{"--file-from-env=MISSING=/tmp/x", "--dry-run"}, "MISSING"},
		{[]string{"--file-from-env=relative", "--dry-run"}, "ENV=/absolute/path"},
		{[]string{"--dry-run", "extra"}, "unexpected arguments"},
	} {
		var out bytes.Buffer
		err := run(t.Context(), tc.args, none, &out)
		if err == nil || !strings.Contains(err.Error()+out.String(), tc.want) {
			t.Errorf("run(%q) = %v, want an error mentioning %q", tc.args, err, tc.want)
		}
	}
}

func TestWaitReady(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) < 3 {
			http.Error(w, "PRE_INITIALIZING", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("LIVE"))
	}))
	defer srv.Close()
	if err := run(t.Context(), []string{"wait-ready", "--url=" + srv.URL + "/ready", "--timeout=10s"}, nil, nil); err != nil {
		t.Fatal(err)
	}
	if calls.Load() != 3 {
		t.Errorf("polled %d times, want 3", calls.Load())
	}

	never := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "PRE_INITIALIZING", http.StatusServiceUnavailable)
	}))
	defer never.Close()
	err := run(t.Context(), []string{"wait-ready", "--url=" + never.URL + "/ready", "--timeout=600ms"}, nil, nil)
	if err == nil || !strings.Contains(err.Error(), "503") {
		t.Errorf("wait-ready on a proxy that never gets ready = %v, want a timeout naming the last answer", err)
	}
}

// fakeAdmin imitates the parts of Envoy's admin interface drain uses.
type fakeAdmin struct {
	mu      sync.Mutex
	drained bool
	open    int
}

func (a *fakeAdmin) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	defer a.mu.Unlock()
	switch r.URL.Path {
	case "/drain_listeners":
		q := r.URL.Query()
		if r.Method != http.MethodPost || !q.Has("inboundonly") || !q.Has("graceful") {
			http.Error(w, "bad drain request", http.StatusMethodNotAllowed)
			return
		}
		a.drained = true
	case "/stats":
		if r.URL.Query().Get("filter") != `^server\.total_connections$` {
			http.Error(w, "unexpected filter", http.StatusBadRequest)
			return
		}
		if a.drained && a.open > 0 {
			a.open--
		}
		_, _ = w.Write([]byte("server.total_connections: " + strconv.Itoa(a.open) + "\n"))
	default:
		http.NotFound(w, r)
	}
}

func TestDrain(t *testing.T) {
	admin := &fakeAdmin{open: 3}
	srv := httptest.NewServer(admin)
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	if err := run(t.Context(), []string{"drain", "--admin=" + addr, "--timeout=10s"}, nil, nil); err != nil {
		t.Fatal(err)
	}
	admin.mu.Lock()
	defer admin.mu.Unlock()
	if !admin.drained || admin.open != 0 {
		t.Errorf("drained=%v open=%d, want a POSTed drain and a wait until no connections are open", admin.drained, admin.open)
	}

	down := httptest.NewServer(http.NotFoundHandler())
	down.Close()
	if err := run(t.Context(), []string{"drain", "--admin=" + strings.TrimPrefix(down.URL, "http://"), "--timeout=1s"}, nil, nil); err == nil {
		t.Error("drain against an unreachable admin succeeded, want an error")
	}
}
