package identity

import (
	"cmp"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"

	meshv1alpha1 "github.com/weft-mesh/weft/api/v1alpha1"
)

// NamespaceOwner returns the MeshIdentity that manages identities in a
// namespace: of those that select it (and are not being deleted), the oldest,
// with the name breaking ties. It returns nil when none selects it. A
// MeshIdentity whose selector does not parse selects nothing.
func NamespaceOwner(ns *corev1.Namespace, candidates []meshv1alpha1.MeshIdentity) *meshv1alpha1.MeshIdentity {
	if ns.DeletionTimestamp != nil {
		return nil
	}
	return ServingOwner(ns, candidates)
}

// ServingOwner returns the MeshIdentity whose trust domain and mTLS mode
// apply to the workloads running in a namespace: the same oldest-wins rule
// as NamespaceOwner, except that a namespace being deleted keeps its owner,
// since its pods still run and still talk mTLS until they are gone.
func ServingOwner(ns *corev1.Namespace, candidates []meshv1alpha1.MeshIdentity) *meshv1alpha1.MeshIdentity {
	var owner *meshv1alpha1.MeshIdentity
	for i := range candidates {
		mi := &candidates[i]
		if mi.DeletionTimestamp != nil || !selectsLabels(mi, ns) {
			continue
		}
		if owner == nil || older(mi, owner) {
			owner = mi
		}
	}
	return owner
}

// Selects reports whether the MeshIdentity's namespace selector matches the
// namespace. Namespaces being deleted are selected by nobody: nothing new can
// be created in them.
func Selects(mi *meshv1alpha1.MeshIdentity, ns *corev1.Namespace) bool {
	return ns.DeletionTimestamp == nil && selectsLabels(mi, ns)
}

func selectsLabels(mi *meshv1alpha1.MeshIdentity, ns *corev1.Namespace) bool {
	sel, err := NamespaceSelector(&mi.Spec)
	if err != nil {
		return false
	}
	return sel.Matches(labels.Set(ns.Labels))
}

func older(a, b *meshv1alpha1.MeshIdentity) bool {
	return cmp.Or(
		a.CreationTimestamp.Compare(b.CreationTimestamp.Time),
		cmp.Compare(a.Name, b.Name),
	) < 0
}
