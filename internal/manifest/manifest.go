// Package manifest reads Kubernetes manifests: a stream of YAML or JSON
// documents, as kubectl and kustomize write them, into objects.
//
// It knows no kinds and must not import Weft's pipeline.
package manifest

import (
	"errors"
	"fmt"
	"io"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
)

// Decode reads every object of a multi-document YAML or JSON stream, in
// order. Empty documents are skipped and a List's items are read as
// objects of their own.
func Decode(r io.Reader) ([]*unstructured.Unstructured, error) {
	dec := utilyaml.NewYAMLOrJSONDecoder(r, 4096)
	var out []*unstructured.Unstructured
	for i := 1; ; i++ {
		u := &unstructured.Unstructured{}
		err := dec.Decode(&u.Object)
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, fmt.Errorf("document %d: %w", i, err)
		}
		if len(u.Object) == 0 {
			continue
		}
		if !u.IsList() {
			out = append(out, u)
			continue
		}
		list, err := u.ToList()
		if err != nil {
			return out, fmt.Errorf("document %d: %w", i, err)
		}
		for j := range list.Items {
			out = append(out, &list.Items[j])
		}
	}
}
