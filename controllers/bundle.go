package controllers

import (
	"context"
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	meshv1alpha1 "github.com/weft-mesh/weft/api/v1alpha1"
	"github.com/weft-mesh/weft/internal/ingest"
)

// bundleSource is where a rebuild reads the cluster: the informers' own
// stores when there are informers, else a reader.
type bundleSource struct {
	informers cache.Informers
	reader    client.Reader
	// smi lists SMI TrafficSplits; nil when they are not read.
	smi func() []*unstructured.Unstructured
	// tcpRoutes says TCPRoutes are read (the cluster serves them).
	tcpRoutes bool
}

// listBundle reads every object ingest needs from the cache. Ingest never
// changes its input, so the cached objects are read as they are, without a
// copy per rebuild.
func listBundle(ctx context.Context, src bundleSource, clusterDomain string) (*ingest.Bundle, error) {
	b := &ingest.Bundle{ClusterDomain: clusterDomain}
	var errs [14]error
	b.Namespaces, errs[0] = list[corev1.Namespace](ctx, src, &corev1.NamespaceList{})
	b.Services, errs[1] = list[corev1.Service](ctx, src, &corev1.ServiceList{})
	b.EndpointSlices, errs[2] = list[discoveryv1.EndpointSlice](ctx, src, &discoveryv1.EndpointSliceList{})
	b.Pods, errs[3] = list[corev1.Pod](ctx, src, &corev1.PodList{})
	b.TrafficSplits, errs[4] = list[meshv1alpha1.TrafficSplit](ctx, src, &meshv1alpha1.TrafficSplitList{})
	b.RetryPolicies, errs[5] = list[meshv1alpha1.RetryPolicy](ctx, src, &meshv1alpha1.RetryPolicyList{})
	b.CircuitBreakers, errs[6] = list[meshv1alpha1.CircuitBreaker](ctx, src, &meshv1alpha1.CircuitBreakerList{})
	b.MeshIdentities, errs[7] = list[meshv1alpha1.MeshIdentity](ctx, src, &meshv1alpha1.MeshIdentityList{})
	b.AccessPolicies, errs[8] = list[meshv1alpha1.AccessPolicy](ctx, src, &meshv1alpha1.AccessPolicyList{})
	b.HTTPRoutes, errs[9] = list[gwapiv1.HTTPRoute](ctx, src, &gwapiv1.HTTPRouteList{})
	b.GRPCRoutes, errs[10] = list[gwapiv1.GRPCRoute](ctx, src, &gwapiv1.GRPCRouteList{})
	b.ReferenceGrants, errs[11] = list[gwapiv1.ReferenceGrant](ctx, src, &gwapiv1.ReferenceGrantList{})
	b.FaultInjections, errs[12] = list[meshv1alpha1.FaultInjection](ctx, src, &meshv1alpha1.FaultInjectionList{})
	b.RateLimitPolicies, errs[13] = list[meshv1alpha1.RateLimitPolicy](ctx, src, &meshv1alpha1.RateLimitPolicyList{})
	if err := errors.Join(errs[:]...); err != nil {
		return nil, err
	}
	if src.smi != nil {
		b.SMITrafficSplits = src.smi()
	}
	if src.tcpRoutes {
		var err error
		if b.TCPRoutes, err = list[gwapiv1.TCPRoute](ctx, src, &gwapiv1.TCPRouteList{}); err != nil {
			return nil, err
		}
	}
	return b, nil
}

// list returns pointers to every cached object of one kind. From an
// informer's store it takes the stored pointers themselves; through a
// reader, the list still copies each object once into its items.
func list[T any, PT interface {
	*T
	client.Object
}](ctx context.Context, src bundleSource, l client.ObjectList) ([]*T, error) {
	if src.informers != nil {
		inf, err := src.informers.GetInformer(ctx, PT(new(T)), cache.BlockUntilSynced(false))
		if err != nil {
			return nil, fmt.Errorf("informer for %T: %w", l, err)
		}
		if s, ok := inf.(interface{ GetStore() toolscache.Store }); ok {
			return storedAs[T, PT](s.GetStore().List()), nil
		}
	}
	if err := src.reader.List(ctx, l, client.UnsafeDisableDeepCopy); err != nil {
		return nil, fmt.Errorf("listing %T: %w", l, err)
	}
	// Pointers into the list's items, not copies.
	objs, err := apimeta.ExtractList(l)
	if err != nil {
		return nil, fmt.Errorf("listing %T: %w", l, err)
	}
	return storedAs[T, PT](objs), nil
}

// storedAs keeps the objects of type T.
func storedAs[T any, PT interface {
	*T
	client.Object
}, O any](objs []O) []*T {
	out := make([]*T, 0, len(objs))
	for _, o := range objs {
		if t, ok := any(o).(PT); ok {
			out = append(out, (*T)(t))
		}
	}
	return out
}
