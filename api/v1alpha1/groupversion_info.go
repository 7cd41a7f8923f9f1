// Package v1alpha1 holds the mesh.weft.dev/v1alpha1 API: TrafficSplit,
// RetryPolicy, CircuitBreaker, MeshIdentity and AccessPolicy.
//
// +kubebuilder:object:generate=true
// +groupName=mesh.weft.dev
package v1alpha1

import (
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/scheme"
)

var (
	// GroupVersion is the group and version of every kind in this package.
	GroupVersion = schema.GroupVersion{Group: "mesh.weft.dev", Version: "v1alpha1"}

	// SchemeBuilder registers the kinds of this package with a scheme.
	SchemeBuilder = &scheme.Builder{GroupVersion: GroupVersion}

	// AddToScheme adds the kinds of this package to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)
