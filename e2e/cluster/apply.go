package cluster

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// ApplyFile creates every object of a multi-document YAML file, or
// replaces its spec when it exists, as `kubectl apply -f` would for a
// first apply. It returns the objects as created.
func (c *Cluster) ApplyFile(ctx context.Context, path string) ([]client.Object, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	decoder := serializer.NewCodecFactory(c.Client.Scheme()).UniversalDeserializer()
	reader := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(raw)))
	var out []client.Object
	for {
		doc, err := reader.Read()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, fmt.Errorf("%s: %w", path, err)
		}
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		obj, _, err := decoder.Decode(doc, nil, nil)
		if err != nil {
			return out, fmt.Errorf("%s: %w", path, err)
		}
		co, ok := obj.(client.Object)
		if !ok {
			return out, fmt.Errorf("%s: %T is not an object", path, obj)
		}
		if err := c.Client.Create(ctx, co); apierrors.IsAlreadyExists(err) {
			existing := co.DeepCopyObject().(client.Object)
			if err := c.Client.Get(ctx, client.ObjectKeyFromObject(co), existing); err != nil {
				return out, err
			}
			co.SetResourceVersion(existing.GetResourceVersion())
			err = c.Client.Update(ctx, co)
			if err != nil {
				return out, fmt.Errorf("%s: updating %s: %w", path, co.GetName(), err)
			}
		} else if err != nil {
			return out, fmt.Errorf("%s: creating %s: %w", path, co.GetName(), err)
		}
		out = append(out, co)
	}
}
