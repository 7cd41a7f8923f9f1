package cli

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/utils/ptr"

	"github.com/weft-mesh/weft/internal/inject"
)

// Injected is the outcome of offline injection.
type Injected struct {
	// Objects are every object read, in order, with pods and workload pod
	// templates injected.
	Objects []*unstructured.Unstructured
	// Notes say, for each pod or workload, what was done and why.
	Notes []string
}

// Inject does to the manifests' Pods and workload pod templates what the
// injection webhook does to pods at admission, with the same code
// (internal/inject), for clusters that run without the webhook. A
// namespace's labels come from a Namespace object among the manifests, if
// any.
func Inject(m *Manifests, cfg inject.Config) (*Injected, error) {
	in, err := inject.New(cfg)
	if err != nil {
		return nil, err
	}
	nsLabels := map[string]map[string]string{}
	for _, ns := range m.Bundle.Namespaces {
		nsLabels[ns.Name] = ns.Labels
	}
	out := &Injected{}
	for _, u := range m.All {
		u = u.DeepCopy()
		ns := u.GetNamespace()
		if ns == "" {
			ns = "default"
		}
		id := u.GetKind() + " " + ns + "/" + u.GetName()
		var path []string
		pod := &corev1.Pod{}
		switch {
		case u.GetAPIVersion() == "v1" && u.GetKind() == "Pod":
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, pod); err != nil {
				return nil, fmt.Errorf("%s: %w", id, err)
			}
		case isWorkload(u):
			path = []string{"spec", "template"}
			tmpl, ok, _ := unstructured.NestedMap(u.Object, path...)
			if !ok {
				out.Objects = append(out.Objects, u)
				continue
			}
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(tmpl, pod); err != nil {
				return nil, fmt.Errorf("%s: pod template: %w", id, err)
			}
			// The webhook sees the template's pods with a generated name
			// and their owner, which names the workload in the proxy's
			// statistics. A Deployment's pods belong to a ReplicaSet
			// named after a template hash that exists only once the
			// Deployment does, so offline the Deployment itself stands in
			// (and the workload_revision tag is left out).
			if pod.GenerateName == "" {
				pod.GenerateName = u.GetName() + "-"
			}
			pod.OwnerReferences = []metav1.OwnerReference{{APIVersion: u.GetAPIVersion(), Kind: u.GetKind(), Name: u.GetName(), Controller: ptr.To(true)}}
		default:
			out.Objects = append(out.Objects, u)
			continue
		}
		pod.Namespace = ns
		res, err := in.Inject(pod, nsLabels[ns])
		if err != nil {
			return nil, fmt.Errorf("%s: %w", id, err)
		}
		if res.Skip != nil {
			out.Notes = append(out.Notes, fmt.Sprintf("%s: not injected: %s", id, res.Skip.Message))
			out.Objects = append(out.Objects, u)
			continue
		}
		obj, err := runtime.DefaultUnstructuredConverter.ToUnstructured(res.Pod)
		if err != nil {
			return nil, err
		}
		clean(obj)
		if path == nil {
			u.Object = obj
			out.Notes = append(out.Notes, fmt.Sprintf("%s: injected (%s)", id, res.Mode))
		} else {
			// Back into the template: what the workload's pods get.
			md, _ := obj["metadata"].(map[string]any)
			delete(md, "namespace")
			delete(md, "generateName")
			delete(md, "ownerReferences")
			delete(obj, "apiVersion")
			delete(obj, "kind")
			if err := unstructured.SetNestedField(u.Object, obj, path...); err != nil {
				return nil, err
			}
			out.Notes = append(out.Notes, fmt.Sprintf("%s: pod template injected (%s)", id, res.Mode))
		}
		out.Objects = append(out.Objects, u)
	}
	return out, nil
}

func isWorkload(u *unstructured.Unstructured) bool {
	switch u.GetAPIVersion() + " " + u.GetKind() {
	case "apps/v1 Deployment", "apps/v1 StatefulSet", "apps/v1 DaemonSet", "apps/v1 ReplicaSet", "batch/v1 Job":
		return true
	}
	return false
}

// clean drops what the conversion adds that no manifest has: an empty
// status and a null creationTimestamp.
func clean(obj map[string]any) {
	delete(obj, "status")
	if md, ok := obj["metadata"].(map[string]any); ok {
		if md["creationTimestamp"] == nil {
			delete(md, "creationTimestamp")
		}
	}
}
