package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net/url"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1alpha1 "github.com/weft-mesh/weft/api/v1alpha1"
	"github.com/weft-mesh/weft/e2e/cluster"
)

// burst starts n calls at once and reports each one's code and duration.
func burst(ctx context.Context, t *testing.T, p *cluster.Pod, target string, n int) (got []codes.Code, took []time.Duration) {
	t.Helper()
	conn, err := p.Conn(target)
	must(t, err)
	got, took = make([]codes.Code, n), make([]time.Duration, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			began := time.Now()
			_, err := cluster.Echo(cctx, conn)
			got[i], took[i] = status.Code(err), time.Since(began)
		})
	}
	close(start)
	wg.Wait()
	return got, took
}

// testCircuitBreaker: with maxRequests 5, 5 of 50 concurrent slow calls
// go through and the other 45 fail at once instead of queueing.
func (b *box) testCircuitBreaker(t *testing.T) {
	ctx := t.Context()
	b.service(t, "shipping", map[string]string{"app": "shipping"})
	p := b.backend(t, "shipping-0", "shipping", map[string]string{"app": "shipping"})
	b.reachable(t, "shipping", b.web)
	const slow = time.Second
	p.Behaviour.SetDelay(slow)

	summarize := func(cs []codes.Code, took []time.Duration) (ok, fastFail, other int) {
		for i, c := range cs {
			switch {
			case c == codes.OK:
				ok++
			case took[i] < slow/4:
				fastFail++
			default:
				other++
			}
		}
		return ok, fastFail, other
	}
	cs, took := burst(ctx, t, b.web, host("shipping"), 50)
	ok, fast, other := summarize(cs, took)
	t.Logf("no CircuitBreaker, 50 concurrent calls to a %s backend: %d ok, %d failed fast, %d failed slowly", slow, ok, fast, other)
	if ok != 50 {
		t.Errorf("without a circuit breaker %d of 50 calls succeeded, want all", ok)
	}

	cb := &meshv1alpha1.CircuitBreaker{
		ObjectMeta: metav1.ObjectMeta{Namespace: appNS, Name: "shipping-breaker"},
		Spec: meshv1alpha1.CircuitBreakerSpec{
			TargetRef:   meshv1alpha1.CircuitBreakerTargetReference{Kind: "Service", Name: "shipping"},
			MaxRequests: ptr.To[int32](5),
		},
	}
	must(t, b.Client.Create(ctx, cb))
	b.waitProgrammed(t, cb)
	cs, took = burst(ctx, t, b.web, host("shipping"), 50)
	ok, fast, other = summarize(cs, took)
	var unavailable int
	for _, c := range cs {
		if c == codes.Unavailable {
			unavailable++
		}
	}
	t.Logf("CircuitBreaker maxRequests=5, 50 concurrent calls: %d ok, %d failed fast (%d UNAVAILABLE), %d failed slowly", ok, fast, unavailable, other)
	if ok != 5 || fast != 45 || unavailable != 45 {
		t.Errorf("got %d ok and %d fast UNAVAILABLE failures, want 5 and 45", ok, unavailable)
	}
}

// testOutlierDetection: an endpoint that fails every call is ejected by
// failure-percentage outlier detection, and calls stop failing.
func (b *box) testOutlierDetection(t *testing.T) {
	ctx := t.Context()
	b.service(t, "reviews", map[string]string{"app": "reviews"})
	var pods []*cluster.Pod
	for _, name := range []string{"reviews-0", "reviews-1", "reviews-2"} {
		pods = append(pods, b.backend(t, name, "reviews", map[string]string{"app": "reviews"}))
	}
	bad := pods[2]
	cb := &meshv1alpha1.CircuitBreaker{
		ObjectMeta: metav1.ObjectMeta{Namespace: appNS, Name: "reviews-ejection"},
		Spec: meshv1alpha1.CircuitBreakerSpec{
			TargetRef: meshv1alpha1.CircuitBreakerTargetReference{Kind: "Service", Name: "reviews"},
			OutlierDetection: &meshv1alpha1.OutlierDetection{
				FailurePercentage:  &meshv1alpha1.FailurePercentage{Threshold: 50, MinimumHosts: 3, RequestVolume: 10},
				Interval:           &metav1.Duration{Duration: time.Second},
				BaseEjectionTime:   &metav1.Duration{Duration: time.Minute},
				MaxEjectionPercent: ptr.To[int32](50),
			},
		},
	}
	must(t, b.Client.Create(ctx, cb))
	b.waitProgrammed(t, cb)
	b.answering(t, b.web, "reviews", pods...)

	bad.Behaviour.SetFailures(1, codes.Internal)
	start := time.Now()
	total := cluster.NewTally()
	ejected := false
	for window := 0; window < 1000 && !ejected && time.Since(start) < 15*time.Second; window++ {
		before := bad.Behaviour.Calls()
		w := load(t, ctx, b.web, host("reviews"), 100, 2)
		total.Merge(w)
		ejected = bad.Behaviour.Calls() == before && w.Failed() == 0
	}
	t.Logf("reviews-2 fails every call: ejected after %s; calls until then: %d, %d failed", time.Since(start).Round(time.Millisecond), total.Calls, total.Failed())
	if !ejected {
		t.Fatalf("the failing endpoint was not ejected")
	}
	before := bad.Behaviour.Calls()
	after := load(t, ctx, b.web, host("reviews"), 500, 2)
	t.Logf("after ejection: %s (reviews-2 received %d calls)", after, bad.Behaviour.Calls()-before)
	if after.Failed() > 0 || bad.Behaviour.Calls() != before {
		t.Errorf("after ejection: %s, reviews-2 got %d calls; want no failures and no calls to it", after, bad.Behaviour.Calls()-before)
	}
}

// testAccess: in a Strict mesh a caller without a mesh identity is
// refused, and an AccessPolicy that allows only service account web
// denies batch's calls while web's go through.
func (b *box) testAccess(t *testing.T) {
	ctx := t.Context()
	b.service(t, "ledger", map[string]string{"app": "ledger"})
	p := b.backend(t, "ledger-0", "ledger", map[string]string{"app": "ledger"})
	// Before any policy both callers get through.
	b.reachable(t, "ledger", b.web, b.batch)

	before := p.Behaviour.Calls()
	direct := func(name string, creds credentials.TransportCredentials) {
		conn, err := grpc.NewClient("passthrough:///"+p.Address(), grpc.WithTransportCredentials(creds))
		must(t, err)
		defer conn.Close()
		cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		_, err = cluster.Echo(cctx, conn)
		t.Logf("%s straight to %s: %v", name, p.Address(), err)
		if err == nil {
			t.Errorf("%s was served by a Strict mTLS workload", name)
		}
	}
	direct("plaintext client", insecure.NewCredentials())
	direct("client with a certificate from another CA", credentials.NewTLS(foreignTLS(t, "spiffe://cluster.local/ns/front/sa/web")))
	if n := p.Behaviour.Calls() - before; n > 0 {
		t.Errorf("the workload handled %d calls from clients without a mesh identity", n)
	}

	ap := &meshv1alpha1.AccessPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: appNS, Name: "ledger-web-only"},
		Spec: meshv1alpha1.AccessPolicySpec{
			TargetRef: meshv1alpha1.ServiceTargetReference{Kind: "Service", Name: "ledger"},
			Action:    meshv1alpha1.ActionAllow,
			Rules: []meshv1alpha1.AccessRule{{From: []meshv1alpha1.AccessSource{{
				ServiceAccount: &meshv1alpha1.ServiceAccountRef{Name: "web", Namespace: frontNS},
			}}}},
		},
	}
	must(t, b.Client.Create(ctx, ap))
	b.waitProgrammed(t, ap)
	eventually(t, 10*time.Second, "batch is denied", func() (bool, string) {
		_, err := echo(ctx, b.batch, host("ledger"), 5*time.Second)
		return status.Code(err) == codes.PermissionDenied, "batch: " + status.Code(err).String()
	})
	web := load(t, ctx, b.web, host("ledger"), 200, 2)
	batch := load(t, ctx, b.batch, host("ledger"), 200, 2)
	t.Logf("AccessPolicy allows sa web: web → %s; batch → %s", web, batch)
	if web.Failed() > 0 {
		t.Errorf("web, allowed by the policy: %s", web)
	}
	if batch.ByCode[codes.PermissionDenied] != batch.Calls {
		t.Errorf("batch, not allowed: %s, want every call PERMISSION_DENIED", batch)
	}
}

// foreignTLS is a client certificate for id from a CA the mesh does not
// trust, verifying nothing: a caller that claims an identity it cannot
// prove.
func foreignTLS(t *testing.T, id string) *tls.Config {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(t, err)
	u, err := url.Parse(id)
	must(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(7),
		Subject:      pkix.Name{CommonName: "intruder"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		URIs:         []*url.URL{u},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	must(t, err)
	cert := &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	return &tls.Config{
		// Presented whatever CAs the server asks for (Go would otherwise
		// send no certificate at all to a server that names other CAs).
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil },
		InsecureSkipVerify:   true, // the intruder does not care who the server is
		NextProtos:           []string{"h2"},
	}
}

// testEndpointChurn: a backend pod is deleted while a client calls the
// Service; once the EndpointSlice update reaches the client, no call goes
// to the pod and none fails, before or after the pod is gone. A new pod
// then starts receiving calls.
func (b *box) testEndpointChurn(t *testing.T) {
	ctx := t.Context()
	b.service(t, "cart", map[string]string{"app": "cart"})
	var pods []*cluster.Pod
	for _, name := range []string{"cart-0", "cart-1", "cart-2"} {
		pods = append(pods, b.backend(t, name, "cart", map[string]string{"app": "cart"}))
	}
	conn, err := b.web.Conn(host("cart"))
	must(t, err)
	b.answering(t, b.web, "cart", pods...)

	// Calls keep flowing, one at a time, for the whole scenario (bounded
	// to two minutes and 200000 calls).
	var mu sync.Mutex
	var calls []call
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		deadline := time.Now().Add(2 * time.Minute)
		for len(calls) < 200000 && time.Now().Before(deadline) {
			select {
			case <-stop:
				return
			default:
			}
			c := call{start: time.Now()}
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			c.pod, c.err = cluster.Echo(cctx, conn)
			cancel()
			c.end = time.Now()
			mu.Lock()
			calls = append(calls, c)
			mu.Unlock()
		}
	}()
	snapshot := func() []call {
		mu.Lock()
		defer mu.Unlock()
		return append([]call(nil), calls...)
	}

	victim := pods[1]
	time.Sleep(300 * time.Millisecond) // traffic before the change
	must(t, victim.Delete(ctx))
	deleted := time.Now()
	eventually(t, 10*time.Second, "EndpointSlice marks cart-1 not ready", func() (bool, string) {
		var es discoveryv1.EndpointSlice
		if err := b.Client.Get(ctx, client.ObjectKey{Namespace: appNS, Name: "cart-box"}, &es); err != nil {
			return false, err.Error()
		}
		for _, ep := range es.Endpoints {
			if ep.TargetRef != nil && ep.TargetRef.Name == victim.Spec.Name {
				return !ptr.Deref(ep.Conditions.Ready, true), "ready"
			}
		}
		return true, ""
	})
	sliceWritten := time.Now()
	// The update has landed when cart-1 has had no call for a second.
	var landed time.Time
	eventually(t, 15*time.Second, "calls stop reaching cart-1", func() (bool, string) {
		last := deleted
		cs := snapshot()
		for _, c := range cs {
			if c.err == nil && c.pod == victim.Spec.Name && c.end.After(last) {
				last = c.end
			}
		}
		landed = last
		return len(cs) > 0 && time.Since(last) > time.Second, "still landing"
	})
	must(t, victim.Remove(ctx))
	removed := time.Now()

	b.backend(t, "cart-3", "cart", map[string]string{"app": "cart"})
	eventually(t, 15*time.Second, "calls reach the new pod cart-3", func() (bool, string) {
		for _, c := range snapshot() {
			if c.pod == "cart-3" {
				return true, ""
			}
		}
		return false, "not yet"
	})
	time.Sleep(500 * time.Millisecond) // traffic after the change
	close(stop)
	<-done

	during, after, total := cluster.NewTally(), cluster.NewTally(), cluster.NewTally()
	for _, c := range calls {
		total.Add(c.pod, c.err)
		switch {
		case c.start.After(landed):
			after.Add(c.pod, c.err)
		case c.start.After(deleted):
			during.Add(c.pod, c.err)
		}
	}
	if len(calls) > 0 {
		end := calls[len(calls)-1].end
		total.Elapsed, during.Elapsed, after.Elapsed = end.Sub(calls[0].start), landed.Sub(deleted), end.Sub(landed)
	}
	t.Logf("deleted cart-1; EndpointSlice updated %s later; last call on cart-1 ended %s after the delete; pod removed %s after the delete",
		sliceWritten.Sub(deleted).Round(time.Millisecond), landed.Sub(deleted).Round(time.Millisecond), removed.Sub(deleted).Round(time.Millisecond))
	t.Logf("calls between delete and landing: %s", during)
	t.Logf("calls after the update landed: %s", after)
	t.Logf("all calls: %s", total)
	if total.Failed() > 0 {
		t.Errorf("%d of %d calls failed during the churn", total.Failed(), total.Calls)
	}
	if after.ByPod[victim.Spec.Name] > 0 {
		t.Errorf("%d calls reached cart-1 after the update landed", after.ByPod[victim.Spec.Name])
	}
}
