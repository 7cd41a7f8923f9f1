package main

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/healthz"
)

// readyzBound is how long one readiness probe waits for the informer
// caches. It stays under the kubelet's default probe timeout of one second,
// so the kubelet hears "not ready" and why, rather than a timeout; the next
// probe asks again.
const readyzBound = 500 * time.Millisecond

// cacheSyncWaiter is the part of the manager's cache the readiness check
// needs.
type cacheSyncWaiter interface {
	WaitForCacheSync(ctx context.Context) bool
}

// cacheSyncedCheck reports ready once the informer caches have synced, so a
// replica joins the xDS and webhook Services only when it answers from a
// full view. Each probe waits at most bound, and no longer than its request
// lives: a probe that waited for the sync itself would hang for as long as
// the API server is unreachable, and pile up one goroutine per probe.
func cacheSyncedCheck(c cacheSyncWaiter, bound time.Duration) healthz.Checker {
	return func(req *http.Request) error {
		ctx, cancel := context.WithTimeout(req.Context(), bound)
		defer cancel()
		if !c.WaitForCacheSync(ctx) {
			return fmt.Errorf("informer caches not synced within %s", bound)
		}
		return nil
	}
}
