package controllers

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
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
}

// listBundle reads every object ingest needs from the cache. Ingest never
// changes its input, so the cached objects are read as they are, without a
// copy per rebuild.
func listBundle(ctx context.Context, src bundleSource, clusterDomain string) (*ingest.Bundle, error) {
	b := &ingest.Bundle{ClusterDomain: clusterDomain}
	var errs [12]error
	b.Namespaces, errs[0] = list(ctx, src, &corev1.NamespaceList{}, func(l *corev1.NamespaceList) []corev1.Namespace { return l.Items })
	b.Services, errs[1] = list(ctx, src, &corev1.ServiceList{}, func(l *corev1.ServiceList) []corev1.Service { return l.Items })
	b.EndpointSlices, errs[2] = list(ctx, src, &discoveryv1.EndpointSliceList{}, func(l *discoveryv1.EndpointSliceList) []discoveryv1.EndpointSlice { return l.Items })
	b.Pods, errs[3] = list(ctx, src, &corev1.PodList{}, func(l *corev1.PodList) []corev1.Pod { return l.Items })
	b.TrafficSplits, errs[4] = list(ctx, src, &meshv1alpha1.TrafficSplitList{}, func(l *meshv1alpha1.TrafficSplitList) []meshv1alpha1.TrafficSplit { return l.Items })
	b.RetryPolicies, errs[5] = list(ctx, src, &meshv1alpha1.RetryPolicyList{}, func(l *meshv1alpha1.RetryPolicyList) []meshv1alpha1.RetryPolicy { return l.Items })
	b.CircuitBreakers, errs[6] = list(ctx, src, &meshv1alpha1.CircuitBreakerList{}, func(l *meshv1alpha1.CircuitBreakerList) []meshv1alpha1.CircuitBreaker { return l.Items })
	b.MeshIdentities, errs[7] = list(ctx, src, &meshv1alpha1.MeshIdentityList{}, func(l *meshv1alpha1.MeshIdentityList) []meshv1alpha1.MeshIdentity { return l.Items })
	b.AccessPolicies, errs[8] = list(ctx, src, &meshv1alpha1.AccessPolicyList{}, func(l *meshv1alpha1.AccessPolicyList) []meshv1alpha1.AccessPolicy { return l.Items })
	b.HTTPRoutes, errs[9] = list(ctx, src, &gwapiv1.HTTPRouteList{}, func(l *gwapiv1.HTTPRouteList) []gwapiv1.HTTPRoute { return l.Items })
	b.GRPCRoutes, errs[10] = list(ctx, src, &gwapiv1.GRPCRouteList{}, func(l *gwapiv1.GRPCRouteList) []gwapiv1.GRPCRoute { return l.Items })
	b.ReferenceGrants, errs[11] = list(ctx, src, &gwapiv1.ReferenceGrantList{}, func(l *gwapiv1.ReferenceGrantList) []gwapiv1.ReferenceGrant { return l.Items })
	for _, err := range errs {
		if err != nil {
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
}, L client.ObjectList](ctx context.Context, src bundleSource, l L, items func(L) []T) ([]*T, error) {
	if src.informers != nil {
		inf, err := src.informers.GetInformer(ctx, PT(new(T)), cache.BlockUntilSynced(false))
		if err != nil {
			return nil, fmt.Errorf("informer for %T: %w", l, err)
		}
		if s, ok := inf.(interface{ GetStore() toolscache.Store }); ok {
			objs := s.GetStore().List()
			out := make([]*T, 0, len(objs))
			for _, o := range objs {
				if t, ok := o.(PT); ok {
					out = append(out, (*T)(t))
				}
			}
			return out, nil
		}
	}
	if err := src.reader.List(ctx, l, client.UnsafeDisableDeepCopy); err != nil {
		return nil, fmt.Errorf("listing %T: %w", l, err)
	}
	return ptrs(items(l)), nil
}

func ptrs[T any](items []T) []*T {
	out := make([]*T, len(items))
	for i := range items {
		out[i] = &items[i]
	}
	return out
}
