package v1alpha3

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// GroupVersion is split.smi-spec.io/v1alpha3.
var GroupVersion = schema.GroupVersion{Group: "split.smi-spec.io", Version: "v1alpha3"}

// AddToScheme registers TrafficSplit and TrafficSplitList at this version.
func AddToScheme(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion, &TrafficSplit{}, &TrafficSplitList{})
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}
