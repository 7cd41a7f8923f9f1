package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/cache"

	"github.com/weft-mesh/weft/internal/xds/translate"
)

// neverSynced is a cache whose sync never completes: it waits for as long
// as it is allowed to.
type neverSynced struct{}

func (neverSynced) WaitForCacheSync(ctx context.Context) bool {
	<-ctx.Done()
	return false
}

type synced struct{}

func (synced) WaitForCacheSync(context.Context) bool { return true }

// probe runs check on a request with ctx and fails the test if it does not
// return within limit.
func probe(t *testing.T, ctx context.Context, check func(*http.Request) error, limit time.Duration) error {
	t.Helper()
	req := httptest.NewRequestWithContext(ctx, http.MethodGet, "/readyz", nil)
	done := make(chan error, 1)
	go func() { done <- check(req) }()
	select {
	case err := <-done:
		return err
	case <-time.After(limit):
		t.Fatalf("the readiness check did not return within %s", limit)
		return nil
	}
}

func TestReadyzDoesNotWaitForeverForTheCaches(t *testing.T) {
	const bound = 100 * time.Millisecond
	start := time.Now()
	if err := probe(t, t.Context(), cacheSyncedCheck(neverSynced{}, bound), 5*time.Second); err == nil {
		t.Fatal("ready although the caches never synced")
	}
	if took := time.Since(start); took < bound {
		t.Errorf("gave up after %s, before its bound of %s", took, bound)
	}
}

func TestReadyzEndsWithItsRequest(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := probe(t, ctx, cacheSyncedCheck(neverSynced{}, time.Hour), 5*time.Second); err == nil {
		t.Fatal("ready although the caches never synced")
	}
}

func TestReadyzWhenSynced(t *testing.T) {
	if err := probe(t, t.Context(), cacheSyncedCheck(synced{}, time.Second), 5*time.Second); err != nil {
		t.Fatalf("not ready with synced caches: %v", err)
	}
}

// The manager's own cache, never started (as while the API server cannot
// be reached), must not hold the probe either.
func TestReadyzWithAnUnstartedInformerCache(t *testing.T) {
	c, err := cache.New(&rest.Config{Host: "https://127.0.0.1:1"}, cache.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := probe(t, t.Context(), cacheSyncedCheck(c, 100*time.Millisecond), 5*time.Second); err == nil {
		t.Fatal("ready although the cache never started")
	}
}

// TestTranslateOptionsFromFlags checks the flags that shape every
// proxy's configuration: tracing is off unless a collector is named, a
// malformed address or sampling share is refused naming the flag.
func TestTranslateOptionsFromFlags(t *testing.T) {
	o := options{accessLog: true, tracingSampling: 1}
	got, err := o.translateOptions()
	if err != nil || got.Tracing != nil || got.DisableAccessLog {
		t.Fatalf("defaults: %+v, %v; want no tracing, access log on", got, err)
	}
	o.tracingAddress, o.tracingSampling, o.accessLog = "otel.observability.svc:4317", 12.5, false
	got, err = o.translateOptions()
	if err != nil || got.Tracing == nil || got.Tracing.Address != "otel.observability.svc" || got.Tracing.Port != 4317 || got.Tracing.SamplingPercent != 12.5 || !got.DisableAccessLog {
		t.Fatalf("tracing on: %+v (%+v), %v", got, got.Tracing, err)
	}
	o = options{accessLog: true, accessLogFormat: "logfmt"}
	if got, err = o.translateOptions(); err != nil || got.AccessLogFormat != translate.AccessLogLogfmt {
		t.Errorf("--access-log-format=logfmt: %+v, %v", got, err)
	}
	if _, err := (options{accessLogFormat: "xml"}).translateOptions(); err == nil || !strings.Contains(err.Error(), "--access-log-format") {
		t.Errorf("--access-log-format=xml: error %v, want one naming the flag", err)
	}
	for _, bad := range []options{
		{tracingAddress: "otel.observability.svc", tracingSampling: 1},
		{tracingAddress: "otel:0", tracingSampling: 1},
		{tracingAddress: ":4317", tracingSampling: 1},
		{tracingAddress: "otel:4317", tracingSampling: 101},
		{tracingAddress: "otel:4317", tracingSampling: -1},
	} {
		if _, err := bad.translateOptions(); err == nil || !strings.Contains(err.Error(), "--tracing-") {
			t.Errorf("%+v: error %v, want one naming the flag", bad, err)
		}
	}
}
