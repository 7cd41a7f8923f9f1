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
	var owner *meshv1alpha1.MeshIdentity
	for i := range candidates {
		mi := &candidates[i]
		if mi.DeletionTimestamp != nil || !Selects(mi, ns) {
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
	if ns.DeletionTimestamp != nil {
		return false
	}
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
