package controllers

import (
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// CacheOptions are the informer cache settings of weft-controller: no
// managed fields on any object, and pods trimmed to what the mesh reads,
// so that the cache of a large cluster stays small and cheap to scan.
func CacheOptions() cache.Options {
	return cache.Options{
		DefaultTransform: cache.TransformStripManagedFields(),
		ByObject: map[client.Object]cache.ByObject{
			&corev1.Pod{}: {Transform: trimPod},
		},
	}
}

// trimPod keeps what the mesh reads of a pod, to keep the cache small.
func trimPod(obj any) (any, error) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil
	}
	trim := func(cs []corev1.Container) []corev1.Container {
		out := make([]corev1.Container, len(cs))
		for i, c := range cs {
			out[i] = corev1.Container{Name: c.Name, Image: c.Image, Ports: c.Ports, RestartPolicy: c.RestartPolicy}
		}
		return out
	}
	pod.Spec = corev1.PodSpec{
		ServiceAccountName: pod.Spec.ServiceAccountName,
		HostNetwork:        pod.Spec.HostNetwork,
		NodeName:           pod.Spec.NodeName,
		InitContainers:     trim(pod.Spec.InitContainers),
		Containers:         trim(pod.Spec.Containers),
	}
	pod.Status = corev1.PodStatus{Phase: pod.Status.Phase, PodIP: pod.Status.PodIP, PodIPs: pod.Status.PodIPs}
	pod.ManagedFields = nil
	return pod, nil
}
