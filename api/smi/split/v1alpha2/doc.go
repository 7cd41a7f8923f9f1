// Package v1alpha2 holds the schema of SMI's split.smi-spec.io/v1alpha2 TrafficSplit,
// for the CRD Weft ships (config/smi). Weft reads TrafficSplits of every
// served version as unstructured objects and never writes them; these types
// exist to generate a structural schema per version.
//
// +kubebuilder:object:generate=true
// +groupName=split.smi-spec.io
package v1alpha2
