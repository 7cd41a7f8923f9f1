package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1alpha1 "github.com/weft-mesh/weft/api/v1alpha1"
	"github.com/weft-mesh/weft/e2e/cluster"
)

// testMethodDeny: a Deny rule on one gRPC method refuses exactly that
// method; a call to another method of the same service gets past the
// policy (and finds no such method on the server).
func (b *box) testMethodDeny(t *testing.T) {
	ctx := t.Context()
	b.service(t, "vault", map[string]string{"app": "vault"})
	p := b.backend(t, "vault-0", "vault", map[string]string{"app": "vault"})
	b.reachable(t, "vault", b.web)
	conn, err := b.web.Conn(host("vault"))
	must(t, err)
	call := func(method string) codes.Code {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		return status.Code(conn.Invoke(cctx, method, wrapperspb.String("x"), new(wrapperspb.StringValue)))
	}
	const other = "/" + cluster.EchoService + "/Other"
	if c := call(other); c != codes.Unimplemented {
		t.Fatalf("before any policy, %s: %s, want Unimplemented (the server has no such method)", other, c)
	}
	ap := &meshv1alpha1.AccessPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: appNS, Name: "vault-no-echo"},
		Spec: meshv1alpha1.AccessPolicySpec{
			TargetRef: meshv1alpha1.ServiceTargetReference{Kind: "Service", Name: "vault"},
			Action:    meshv1alpha1.ActionDeny,
			Rules:     []meshv1alpha1.AccessRule{{To: []meshv1alpha1.AccessDestination{{Paths: []string{cluster.EchoMethod}}}}},
		},
	}
	must(t, b.Client.Create(ctx, ap))
	b.waitProgrammed(t, ap)
	before := p.Behaviour.Calls()
	eventually(t, 10*time.Second, "the Echo method is denied", func() (bool, string) {
		c := call(cluster.EchoMethod)
		return c == codes.PermissionDenied, c.String()
	})
	denied, passed := 0, 0
	for range 100 {
		if call(cluster.EchoMethod) == codes.PermissionDenied {
			denied++
		}
		if call(other) == codes.Unimplemented {
			passed++
		}
	}
	t.Logf("Deny on %s: 100 calls to it → %d PERMISSION_DENIED; 100 calls to %s → %d reached the server (Unimplemented)", cluster.EchoMethod, denied, other, passed)
	if denied != 100 || passed != 100 {
		t.Errorf("Deny on one method: %d of 100 calls to it denied, %d of 100 calls to another method let through; want 100 and 100", denied, passed)
	}
	if n := p.Behaviour.Calls() - before; n > 0 {
		t.Errorf("the server handled %d calls to the denied method", n)
	}
}

// testPermissive: the box's workloads are proxyless gRPC servers, which
// cannot tell plaintext from TLS on one port, so Permissive is served as
// mTLS there: mesh callers get through, plaintext callers are still
// refused, and the MeshIdentity says so (ProxylessCompatible=False, naming
// the pods) instead of claiming what does not happen. Envoy's Permissive
// chains are proven by the inbound-permissive golden.
func (b *box) testPermissive(t *testing.T) {
	ctx := t.Context()
	b.service(t, "legacy", map[string]string{"app": "legacy"})
	p := b.backend(t, "legacy-0", "legacy", map[string]string{"app": "legacy"})
	b.reachable(t, "legacy", b.web)
	direct := func(creds credentials.TransportCredentials) error {
		conn, err := grpc.NewClient("passthrough:///"+p.Address(), grpc.WithTransportCredentials(creds))
		must(t, err)
		defer conn.Close()
		cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		_, err = cluster.Echo(cctx, conn)
		return err
	}
	var mi meshv1alpha1.MeshIdentity
	setMode := func(ctx context.Context, mode meshv1alpha1.MTLSMode) {
		t.Helper()
		must(t, retry.RetryOnConflict(retry.DefaultRetry, func() error {
			if err := b.Client.Get(ctx, client.ObjectKey{Name: cluster.MeshIdentityName}, &mi); err != nil {
				return err
			}
			mi.Spec.MTLS.Mode = mode
			return b.Client.Update(ctx, &mi)
		}))
	}
	proxylessCond := func() *metav1.Condition {
		must(t, b.Client.Get(ctx, client.ObjectKey{Name: cluster.MeshIdentityName}, &mi))
		return meta.FindStatusCondition(mi.Status.Conditions, meshv1alpha1.ConditionProxylessCompatible)
	}
	setMode(ctx, meshv1alpha1.MTLSPermissive)
	// t.Context() is done before cleanups run.
	t.Cleanup(func() { setMode(context.Background(), meshv1alpha1.MTLSStrict) })
	eventually(t, 15*time.Second, "the MeshIdentity reports what Permissive does to proxyless servers", func() (bool, string) {
		c := proxylessCond()
		return c != nil && c.Status == metav1.ConditionFalse && c.Reason == meshv1alpha1.ReasonUnsupportedByProxyless && c.ObservedGeneration == mi.Generation, fmt.Sprintf("%+v", c)
	})
	t.Logf("MeshIdentity in Permissive: %s", proxylessCond().Message)
	if msg := proxylessCond().Message; !strings.Contains(msg, "plaintext callers of") || !strings.Contains(msg, "/") {
		t.Errorf("the condition does not name the pods: %s", msg)
	}
	mesh := load(t, ctx, b.web, host("legacy"), 200, 2)
	plain := direct(insecure.NewCredentials())
	foreign := direct(credentials.NewTLS(foreignTLS(t, "spiffe://cluster.local/ns/front/sa/web")))
	t.Logf("Permissive, proxyless server: mesh (mTLS) caller → %s; plaintext → %v; foreign CA → %v", mesh, plain, foreign)
	if mesh.Failed() > 0 {
		t.Errorf("Permissive: mesh calls %s", mesh)
	}
	if plain == nil || foreign == nil {
		t.Errorf("Permissive on a proxyless server: plaintext %v, foreign CA %v; both must be refused, as the condition says", plain, foreign)
	}
	setMode(ctx, meshv1alpha1.MTLSStrict)
	eventually(t, 15*time.Second, "Strict again: the condition goes", func() (bool, string) {
		c := proxylessCond()
		return c == nil, fmt.Sprintf("%+v", c)
	})
	if tl := load(t, ctx, b.web, host("legacy"), 100, 2); tl.Failed() > 0 {
		t.Errorf("Strict again: mesh calls %s", tl)
	}
}

// testRateLimitOnProxyless: the box's workloads are proxyless gRPC
// servers, which have no local rate limit, so a RateLimitPolicy on one of
// their Services is accepted but not Ready, and says why, rather than
// pretending to limit anything. (Envoy's filter is proven by the
// ratelimit golden and Envoy's own validation.)
func (b *box) testRateLimitOnProxyless(t *testing.T) {
	ctx := t.Context()
	b.service(t, "quota", map[string]string{"app": "quota"})
	b.backend(t, "quota-0", "quota", map[string]string{"app": "quota"})
	b.reachable(t, "quota", b.web)
	rl := &meshv1alpha1.RateLimitPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: appNS, Name: "quota-limits"},
		Spec: meshv1alpha1.RateLimitPolicySpec{
			TargetRef: meshv1alpha1.ServiceTargetReference{Kind: "Service", Name: "quota"},
			Limit:     &meshv1alpha1.RateLimit{Requests: 10},
		},
	}
	must(t, b.Client.Create(ctx, rl))
	eventually(t, 15*time.Second, "the RateLimitPolicy says nothing enforces it", func() (bool, string) {
		must(t, b.Client.Get(ctx, client.ObjectKeyFromObject(rl), rl))
		c := meta.FindStatusCondition(rl.Status.Conditions, meshv1alpha1.ConditionReady)
		return c != nil && c.Status == metav1.ConditionFalse && c.Reason == meshv1alpha1.ReasonUnsupportedByProxyless &&
			strings.Contains(c.Message, "shop/quota-0") && c.ObservedGeneration == rl.Generation, fmt.Sprintf("%+v", rl.Status.Conditions)
	})
	// And calls are not limited: 50 calls, where the limit would allow 10.
	if tl := load(t, ctx, b.web, host("quota"), 50, 1); tl.Failed() > 0 {
		t.Errorf("calls to a proxyless server under a RateLimitPolicy: %s", tl)
	}
}
