package cluster

import (
	"context"
	"fmt"
	"os"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"
)

// kubelet mounts the box's pods' Secret, ConfigMap and projected volumes
// and keeps them current: whenever a source changes, the volume gets the
// new version with one atomic ..data swap. Like the kubelet, it holds a
// pod's start until every non-optional source exists.
type kubelet struct {
	c      *Cluster
	reader client.Reader
	events chan event.GenericEvent
}

func newKubelet(c *Cluster) *kubelet {
	return &kubelet{c: c, events: make(chan event.GenericEvent, 64)}
}

func (k *kubelet) setup(mgr ctrl.Manager) error {
	k.reader = mgr.GetClient()
	podsInNamespace := handler.EnqueueRequestsFromMapFunc(func(_ context.Context, obj client.Object) []reconcile.Request {
		k.c.mu.Lock()
		defer k.c.mu.Unlock()
		var out []reconcile.Request
		for _, p := range k.c.pods {
			if p.Spec.Namespace == obj.GetNamespace() {
				out = append(out, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: p.Spec.Namespace, Name: p.Spec.Name}})
			}
		}
		return out
	})
	return ctrl.NewControllerManagedBy(mgr).
		Named("box-kubelet").
		Watches(&corev1.Secret{}, podsInNamespace).
		Watches(&corev1.ConfigMap{}, podsInNamespace).
		WatchesRawSource(source.Channel(k.events, &handler.EnqueueRequestForObject{})).
		Complete(k)
}

// trigger asks for a pod's volumes to be mounted now.
func (k *kubelet) trigger(p *Pod) {
	k.events <- event.GenericEvent{Object: p.Object.DeepCopy()}
}

func (k *kubelet) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	k.c.mu.Lock()
	p := k.c.pods[podKey(req.Namespace, req.Name)]
	k.c.mu.Unlock()
	if p == nil || p.ctx.Err() != nil {
		return reconcile.Result{}, nil
	}
	mounts := map[string]bool{}
	for _, c := range p.Object.Spec.Containers {
		for _, m := range c.VolumeMounts {
			mounts[m.Name] = true
		}
	}
	var missing []string
	for _, v := range p.Object.Spec.Volumes {
		if !mounts[v.Name] {
			continue
		}
		files, mode, why, err := k.volumeFiles(ctx, p.Spec.Namespace, v)
		if err != nil {
			return reconcile.Result{}, err
		}
		if why != "" {
			missing = append(missing, fmt.Sprintf("volume %s: %s", v.Name, why))
			continue
		}
		if files == nil {
			continue // a kind of volume the box does not fill (emptyDir)
		}
		dir := p.volumeDir(v.Name)
		if sameFiles(dir, files) {
			continue
		}
		if err := writeAtomic(dir, files, os.FileMode(mode)); err != nil {
			return reconcile.Result{}, err
		}
	}
	p.mountMu.Lock()
	p.missing = strings.Join(missing, "; ")
	p.mountMu.Unlock()
	if len(missing) == 0 {
		p.mountOnce.Do(func() { close(p.mounted) })
	}
	return reconcile.Result{}, nil
}

// volumeFiles computes a volume's files from its sources. why says which
// required source is missing.
func (k *kubelet) volumeFiles(ctx context.Context, ns string, v corev1.Volume) (files map[string][]byte, mode uint32, why string, err error) {
	files = map[string][]byte{}
	mode = 0o644
	add := func(kind, name string, optional *bool, items []corev1.KeyToPath, data map[string][]byte, found bool) {
		if !found {
			if optional == nil || !*optional {
				why = fmt.Sprintf("%s %s/%s not found", kind, ns, name)
			}
			return
		}
		if len(items) == 0 {
			for key, b := range data {
				files[key] = b
			}
			return
		}
		for _, it := range items {
			b, ok := data[it.Key]
			if !ok {
				if optional == nil || !*optional {
					why = fmt.Sprintf("%s %s/%s has no key %s", kind, ns, name, it.Key)
				}
				continue
			}
			files[it.Path] = b
		}
	}
	secret := func(name string) (map[string][]byte, bool, error) {
		var s corev1.Secret
		err := k.reader.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &s)
		if apierrors.IsNotFound(err) {
			return nil, false, nil
		}
		return s.Data, err == nil, err
	}
	configMap := func(name string) (map[string][]byte, bool, error) {
		var cm corev1.ConfigMap
		err := k.reader.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &cm)
		if apierrors.IsNotFound(err) {
			return nil, false, nil
		}
		if err != nil {
			return nil, false, err
		}
		data := map[string][]byte{}
		for key, s := range cm.Data {
			data[key] = []byte(s)
		}
		for key, b := range cm.BinaryData {
			data[key] = b
		}
		return data, true, nil
	}
	switch {
	case v.Projected != nil:
		if v.Projected.DefaultMode != nil {
			mode = uint32(*v.Projected.DefaultMode)
		}
		for _, src := range v.Projected.Sources {
			switch {
			case src.Secret != nil:
				data, ok, err := secret(src.Secret.Name)
				if err != nil {
					return nil, 0, "", err
				}
				add("Secret", src.Secret.Name, src.Secret.Optional, src.Secret.Items, data, ok)
			case src.ConfigMap != nil:
				data, ok, err := configMap(src.ConfigMap.Name)
				if err != nil {
					return nil, 0, "", err
				}
				add("ConfigMap", src.ConfigMap.Name, src.ConfigMap.Optional, src.ConfigMap.Items, data, ok)
			}
		}
	case v.Secret != nil:
		if v.Secret.DefaultMode != nil {
			mode = uint32(*v.Secret.DefaultMode)
		}
		data, ok, err := secret(v.Secret.SecretName)
		if err != nil {
			return nil, 0, "", err
		}
		add("Secret", v.Secret.SecretName, v.Secret.Optional, v.Secret.Items, data, ok)
	case v.ConfigMap != nil:
		if v.ConfigMap.DefaultMode != nil {
			mode = uint32(*v.ConfigMap.DefaultMode)
		}
		data, ok, err := configMap(v.ConfigMap.Name)
		if err != nil {
			return nil, 0, "", err
		}
		add("ConfigMap", v.ConfigMap.Name, v.ConfigMap.Optional, v.ConfigMap.Items, data, ok)
	default:
		return nil, 0, "", nil
	}
	if why != "" {
		return nil, 0, why, nil
	}
	return files, mode, "", nil
}
