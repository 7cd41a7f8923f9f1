package controllers

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	meshv1alpha1 "github.com/weft-mesh/weft/api/v1alpha1"
	"github.com/weft-mesh/weft/internal/ingest"
)

// listBundle reads every object ingest needs from the cache.
func listBundle(ctx context.Context, c client.Reader, clusterDomain string) (*ingest.Bundle, error) {
	b := &ingest.Bundle{ClusterDomain: clusterDomain}
	var (
		nss   corev1.NamespaceList
		svcs  corev1.ServiceList
		eps   discoveryv1.EndpointSliceList
		pods  corev1.PodList
		tss   meshv1alpha1.TrafficSplitList
		rps   meshv1alpha1.RetryPolicyList
		cbs   meshv1alpha1.CircuitBreakerList
		mis   meshv1alpha1.MeshIdentityList
		aps   meshv1alpha1.AccessPolicyList
		hrs   gwapiv1.HTTPRouteList
		grs   gwapiv1.GRPCRouteList
		rgs   gwapiv1.ReferenceGrantList
		lists = []client.ObjectList{&nss, &svcs, &eps, &pods, &tss, &rps, &cbs, &mis, &aps, &hrs, &grs, &rgs}
	)
	for _, l := range lists {
		// Ingest never changes its input, so the cache's objects are read as
		// they are, without a copy per rebuild.
		if err := c.List(ctx, l, client.UnsafeDisableDeepCopy); err != nil {
			return nil, fmt.Errorf("listing %T: %w", l, err)
		}
	}
	b.Namespaces = ptrs(nss.Items)
	b.Services = ptrs(svcs.Items)
	b.EndpointSlices = ptrs(eps.Items)
	b.Pods = ptrs(pods.Items)
	b.TrafficSplits = ptrs(tss.Items)
	b.RetryPolicies = ptrs(rps.Items)
	b.CircuitBreakers = ptrs(cbs.Items)
	b.MeshIdentities = ptrs(mis.Items)
	b.AccessPolicies = ptrs(aps.Items)
	b.HTTPRoutes = ptrs(hrs.Items)
	b.GRPCRoutes = ptrs(grs.Items)
	b.ReferenceGrants = ptrs(rgs.Items)
	return b, nil
}

func ptrs[T any](items []T) []*T {
	out := make([]*T, len(items))
	for i := range items {
		out[i] = &items[i]
	}
	return out
}
