package cluster

import (
	"context"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
)

// managedBy marks the EndpointSlices the box writes, in the label the
// endpointslice controller uses for its own.
const managedBy = "clusterbox.weft.dev"

// endpointSlices does the endpointslice controller's job, which envtest
// does not run: one EndpointSlice per Service with a selector, listing the
// running pods it selects with the conditions the real controller gives
// them (ready, serving, terminating).
type endpointSlices struct {
	c client.Client
}

func setupEndpointSlices(mgr ctrl.Manager) error {
	r := &endpointSlices{c: mgr.GetClient()}
	return ctrl.NewControllerManagedBy(mgr).
		Named("box-endpointslices").
		For(&corev1.Service{}).
		Watches(&corev1.Pod{}, handler.EnqueueRequestsFromMapFunc(r.servicesOfPod)).
		Complete(r)
}

func (r *endpointSlices) servicesOfPod(ctx context.Context, obj client.Object) []reconcile.Request {
	var svcs corev1.ServiceList
	if err := r.c.List(ctx, &svcs, client.InNamespace(obj.GetNamespace())); err != nil {
		return nil
	}
	out := make([]reconcile.Request, 0, len(svcs.Items))
	for _, s := range svcs.Items {
		out = append(out, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: s.Namespace, Name: s.Name}})
	}
	return out
}

func sliceName(svc string) string { return svc + "-box" }

func (r *endpointSlices) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	key := types.NamespacedName{Namespace: req.Namespace, Name: sliceName(req.Name)}
	var svc corev1.Service
	err := r.c.Get(ctx, req.NamespacedName, &svc)
	if apierrors.IsNotFound(err) || (err == nil && (len(svc.Spec.Selector) == 0 || svc.DeletionTimestamp != nil)) {
		// No garbage collector runs in the box: delete the slice directly.
		old := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name}}
		return reconcile.Result{}, client.IgnoreNotFound(r.c.Delete(ctx, old))
	}
	if err != nil {
		return reconcile.Result{}, err
	}
	var pods corev1.PodList
	if err := r.c.List(ctx, &pods, client.InNamespace(svc.Namespace), client.MatchingLabelsSelector{Selector: labels.SelectorFromSet(svc.Spec.Selector)}); err != nil {
		return reconcile.Result{}, err
	}
	want := desiredSlice(&svc, pods.Items)

	var have discoveryv1.EndpointSlice
	err = r.c.Get(ctx, key, &have)
	if apierrors.IsNotFound(err) {
		return reconcile.Result{}, r.c.Create(ctx, want)
	}
	if err != nil {
		return reconcile.Result{}, err
	}
	if apiequality.Semantic.DeepEqual(have.Endpoints, want.Endpoints) && apiequality.Semantic.DeepEqual(have.Ports, want.Ports) {
		return reconcile.Result{}, nil
	}
	have.Endpoints, have.Ports = want.Endpoints, want.Ports
	return reconcile.Result{}, r.c.Update(ctx, &have)
}

func desiredSlice(svc *corev1.Service, pods []corev1.Pod) *discoveryv1.EndpointSlice {
	es := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: svc.Namespace,
			Name:      sliceName(svc.Name),
			Labels: map[string]string{
				discoveryv1.LabelServiceName: svc.Name,
				discoveryv1.LabelManagedBy:   managedBy,
			},
			OwnerReferences: []metav1.OwnerReference{{
				APIVersion: "v1", Kind: "Service", Name: svc.Name, UID: svc.UID,
				Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true),
			}},
		},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{},
	}
	slices.SortFunc(pods, func(a, b corev1.Pod) int { return strings.Compare(a.Name, b.Name) })
	for i := range pods {
		pod := &pods[i]
		if pod.Status.PodIP == "" || pod.Status.Phase != corev1.PodRunning {
			continue
		}
		if es.Ports == nil {
			es.Ports = slicePorts(svc, pod)
		}
		ready := podReady(pod)
		terminating := pod.DeletionTimestamp != nil
		es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{
			Addresses: []string{pod.Status.PodIP},
			Conditions: discoveryv1.EndpointConditions{
				Ready:       ptr.To(ready && !terminating),
				Serving:     ptr.To(ready),
				Terminating: ptr.To(terminating),
			},
			NodeName:  ptr.To(pod.Spec.NodeName),
			TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: pod.Namespace, Name: pod.Name, UID: pod.UID},
		})
	}
	if es.Ports == nil {
		es.Ports = []discoveryv1.EndpointPort{}
	}
	return es
}

// slicePorts resolves the Service's target ports against a pod, as the
// endpointslice controller does (named ports by the container's port name).
func slicePorts(svc *corev1.Service, pod *corev1.Pod) []discoveryv1.EndpointPort {
	var out []discoveryv1.EndpointPort
	for _, sp := range svc.Spec.Ports {
		port := sp.TargetPort.IntVal
		if name := sp.TargetPort.StrVal; name != "" {
			port = 0
			for _, c := range pod.Spec.Containers {
				for _, cp := range c.Ports {
					if cp.Name == name {
						port = cp.ContainerPort
					}
				}
			}
		}
		if port == 0 && sp.TargetPort.StrVal == "" {
			port = sp.Port
		}
		if port == 0 {
			continue
		}
		out = append(out, discoveryv1.EndpointPort{
			Name:        ptr.To(sp.Name),
			Port:        ptr.To(port),
			Protocol:    ptr.To(orTCP(sp.Protocol)),
			AppProtocol: sp.AppProtocol,
		})
	}
	return out
}

func orTCP(p corev1.Protocol) corev1.Protocol {
	if p == "" {
		return corev1.ProtocolTCP
	}
	return p
}

func podReady(pod *corev1.Pod) bool {
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
