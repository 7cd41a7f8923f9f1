package ingest

import (
	"cmp"
	"maps"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	meshv1alpha1 "github.com/weft-mesh/weft/api/v1alpha1"
	"github.com/weft-mesh/weft/internal/identity"
	"github.com/weft-mesh/weft/internal/ir"
)

// state is the work area of one Build call.
type state struct {
	b      *Bundle
	domain string

	namespaces map[string]*corev1.Namespace
	meshNS     map[string]*ir.Namespace
	services   map[string]*service // by namespace/name
	// routeTables collect route entries per Service port before ordering.
	tables map[tableKey]*routeTable

	statuses   map[ir.ObjectRef]*verdict
	routeIndex map[ir.ObjectRef]bool
	// defaultTD is the first trust domain in the mesh, computed once.
	defaultTD *string
	routes    []RouteStatus
	warnings  []Warning
	// smi are the SMI splits, which get Events rather than status.
	smi []smiVerdict
	// faultRules are, by FaultInjection (namespace/name), the routes whose
	// rules name it in an ExtensionRef filter.
	faultRules map[string][]string
	// faultIndex finds FaultInjections by namespace/name.
	faultIndex map[string]*meshv1alpha1.FaultInjection
	// podsByNS are the pods by namespace, built when first needed.
	podsByNS map[string][]*corev1.Pod
}

// Build turns a bundle into the mesh model and the status of every policy
// and route. It never fails: bad input becomes conditions and warnings.
func Build(b *Bundle) *Result {
	return buildWith(b, nil)
}

func newState(b *Bundle) *state {
	return &state{
		b:          b,
		domain:     cmp.Or(b.ClusterDomain, DefaultClusterDomain),
		namespaces: map[string]*corev1.Namespace{},
		meshNS:     map[string]*ir.Namespace{},
		services:   map[string]*service{},
		tables:     map[tableKey]*routeTable{},
		statuses:   map[ir.ObjectRef]*verdict{},
	}
}

func buildWith(b *Bundle, memo *Memo) *Result {
	s := newState(b)
	s.buildNamespaces()
	s.buildServices()
	s.endpoints(memo)
	s.buildRoutes()
	s.buildTrafficSplits()
	s.finishRoutes()
	s.buildRetryPolicies()
	s.buildFaultInjections()
	s.buildCircuitBreakers()
	s.buildAccessPolicies()
	s.buildRateLimits()
	s.reportExportsToProxyless()
	mesh := &ir.Mesh{ClusterDomain: s.domain}
	mesh.ProxyGroups = s.proxyGroups(memo)

	for _, name := range sortedKeys(s.meshNS) {
		mesh.Namespaces = append(mesh.Namespaces, s.meshNS[name])
	}
	for _, key := range sortedKeys(s.services) {
		mesh.Services = append(mesh.Services, s.services[key].ir)
	}
	res := &Result{Mesh: mesh, Routes: s.routes, Warnings: s.warnings, SMITrafficSplits: s.smiStatuses()}
	for _, v := range s.statuses {
		res.Statuses = append(res.Statuses, v.status())
	}
	slices.SortFunc(res.Statuses, func(a, b ObjectStatus) int { return compareRefs(a.Ref, b.Ref) })
	slices.SortFunc(res.Routes, func(a, b RouteStatus) int { return compareRefs(a.Ref, b.Ref) })
	slices.SortFunc(res.Warnings, func(a, b Warning) int {
		return cmp.Or(compareRefs(a.Ref, b.Ref), strings.Compare(a.Reason, b.Reason), strings.Compare(a.Message, b.Message))
	})
	return res
}

func (s *state) verdict(kind string, obj metav1.Object) *verdict {
	v := newVerdict(kind, obj.GetNamespace(), obj.GetName(), obj.GetGeneration())
	s.statuses[v.ref] = v
	return v
}

func (s *state) warn(ref ir.ObjectRef, reason, msg string) {
	s.warnings = append(s.warnings, Warning{Ref: ref, Reason: reason, Message: msg})
}

// buildNamespaces settles which MeshIdentity gives each namespace its trust
// domain and mTLS mode. The oldest MeshIdentity selecting a namespace wins;
// the MeshIdentity reconciler reports the conflict on the others.
func (s *state) buildNamespaces() {
	for _, ns := range s.b.Namespaces {
		s.namespaces[ns.Name] = ns
	}
	ids := make([]meshv1alpha1.MeshIdentity, len(s.b.MeshIdentities))
	for i, id := range s.b.MeshIdentities {
		ids[i] = *id
	}
	for _, name := range sortedKeys(s.namespaces) {
		m := &ir.Namespace{Name: name, MTLS: ir.MTLSDisabled}
		if id := identity.ServingOwner(s.namespaces[name], ids); id != nil {
			m.TrustDomain = id.Spec.TrustDomain
			m.MTLS = ir.MTLSStrict
			if id.Spec.MTLS.Mode == meshv1alpha1.MTLSPermissive {
				m.MTLS = ir.MTLSPermissive
			}
			m.Identity = &ir.ObjectRef{Group: meshv1alpha1.GroupVersion.Group, Kind: "MeshIdentity", Name: id.Name}
		}
		s.meshNS[name] = m
	}
}

// trustDomain is the trust domain of a namespace's workloads, or the first
// trust domain in the mesh when the namespace has none (so that policies
// naming callers in unmeshed namespaces still compile to principals).
func (s *state) trustDomain(ns string) string {
	if m := s.meshNS[ns]; m != nil && m.TrustDomain != "" {
		return m.TrustDomain
	}
	if s.defaultTD == nil {
		td := DefaultClusterDomain
		for _, name := range sortedKeys(s.meshNS) {
			if t := s.meshNS[name].TrustDomain; t != "" {
				td = t
				break
			}
		}
		s.defaultTD = &td
	}
	return *s.defaultTD
}

func (s *state) mtls(ns string) ir.MTLSMode {
	if m := s.meshNS[ns]; m != nil {
		return m.MTLS
	}
	return ir.MTLSDisabled
}

func sortedKeys[M ~map[K]V, K cmp.Ordered, V any](m M) []K {
	return slices.Sorted(maps.Keys(m))
}

func compareRefs(a, b ir.ObjectRef) int {
	return cmp.Or(strings.Compare(a.Group, b.Group), strings.Compare(a.Kind, b.Kind),
		strings.Compare(a.Namespace, b.Namespace), strings.Compare(a.Name, b.Name))
}
