package inject

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	meshv1alpha1 "github.com/weft-mesh/weft/api/v1alpha1"
	"github.com/weft-mesh/weft/internal/capture"
)

// AnnotationError is a pod annotation with a value Inject cannot use. The pod
// is rejected with its message, which names the annotation.
type AnnotationError struct {
	Annotation string
	Value      string
	Err        error
}

func (e *AnnotationError) Error() string {
	return fmt.Sprintf("annotation %s=%q: %v", e.Annotation, e.Value, e.Err)
}

func (e *AnnotationError) Unwrap() error { return e.Err }

// IsRejection reports whether err means the pod itself is invalid (a bad
// annotation), as opposed to a failure of the injector.
func IsRejection(err error) bool {
	var ae *AnnotationError
	return errors.As(err, &ae)
}

// overrides are the per-pod settings taken from annotations.
type overrides struct {
	excludeInboundPorts  []uint16
	excludeOutboundPorts []uint16
	excludeOutboundCIDRs []netip.Prefix
	resources            corev1.ResourceRequirements
	logLevel             string
	image                string
	// set lists the proxy annotations present, for grpc-agent warnings.
	set []string
}

var proxyAnnotations = []string{
	meshv1alpha1.AnnotationExcludeInboundPorts, meshv1alpha1.AnnotationExcludeOutboundPorts, meshv1alpha1.AnnotationExcludeOutboundCIDRs,
	meshv1alpha1.AnnotationProxyCPU, meshv1alpha1.AnnotationProxyMemory, meshv1alpha1.AnnotationProxyCPULimit, meshv1alpha1.AnnotationProxyMemoryLimit,
	meshv1alpha1.AnnotationProxyLogLevel, meshv1alpha1.AnnotationProxyImage,
}

// parseOverrides reads and validates every proxy annotation, reporting all
// bad ones at once so a user fixes them in one round.
func parseOverrides(ann map[string]string, cfg Config) (overrides, error) {
	o := overrides{logLevel: cfg.LogLevel, image: cfg.ProxyImage}
	var errs []error
	bad := func(key string, err error) {
		errs = append(errs, &AnnotationError{Annotation: key, Value: ann[key], Err: err})
	}
	for _, key := range proxyAnnotations {
		if _, ok := ann[key]; ok {
			o.set = append(o.set, key)
		}
	}

	if v, ok := ann[meshv1alpha1.AnnotationExcludeInboundPorts]; ok {
		ports, err := capture.ParsePorts(v)
		if err != nil {
			bad(meshv1alpha1.AnnotationExcludeInboundPorts, err)
		}
		o.excludeInboundPorts = ports
	}
	if v, ok := ann[meshv1alpha1.AnnotationExcludeOutboundPorts]; ok {
		ports, err := capture.ParsePorts(v)
		if err != nil {
			bad(meshv1alpha1.AnnotationExcludeOutboundPorts, err)
		}
		o.excludeOutboundPorts = ports
	}
	if v, ok := ann[meshv1alpha1.AnnotationExcludeOutboundCIDRs]; ok {
		cidrs, err := capture.ParseCIDRs(v)
		if err != nil {
			bad(meshv1alpha1.AnnotationExcludeOutboundCIDRs, err)
		}
		o.excludeOutboundCIDRs = cidrs
	}

	requests, limits := corev1.ResourceList{}, corev1.ResourceList{}
	setQuantity(requests, corev1.ResourceCPU, cfg.ProxyCPU)
	setQuantity(requests, corev1.ResourceMemory, cfg.ProxyMemory)
	setQuantity(limits, corev1.ResourceCPU, cfg.ProxyCPULimit)
	setQuantity(limits, corev1.ResourceMemory, cfg.ProxyMemoryLimit)
	quantities := []struct {
		key  string
		list corev1.ResourceList
		name corev1.ResourceName
	}{
		{meshv1alpha1.AnnotationProxyCPU, requests, corev1.ResourceCPU},
		{meshv1alpha1.AnnotationProxyMemory, requests, corev1.ResourceMemory},
		{meshv1alpha1.AnnotationProxyCPULimit, limits, corev1.ResourceCPU},
		{meshv1alpha1.AnnotationProxyMemoryLimit, limits, corev1.ResourceMemory},
	}
	quantityOK := true
	for _, q := range quantities {
		v, ok := ann[q.key]
		if !ok {
			continue
		}
		parsed, err := resource.ParseQuantity(strings.TrimSpace(v))
		switch {
		case err != nil:
			bad(q.key, errors.New("not a resource quantity such as 100m or 256Mi"))
			quantityOK = false
		case parsed.Sign() <= 0:
			bad(q.key, errors.New("must be greater than zero"))
			quantityOK = false
		default:
			q.list[q.name] = parsed
		}
	}
	if quantityOK {
		// The API server would reject the pod later with a message about the
		// container; say which annotation to change instead.
		for _, r := range []struct {
			name          corev1.ResourceName
			reqKey, limit string
		}{{corev1.ResourceCPU, meshv1alpha1.AnnotationProxyCPU, meshv1alpha1.AnnotationProxyCPULimit}, {corev1.ResourceMemory, meshv1alpha1.AnnotationProxyMemory, meshv1alpha1.AnnotationProxyMemoryLimit}} {
			req, hasReq := requests[r.name]
			lim, hasLim := limits[r.name]
			if !hasReq || !hasLim || req.Cmp(lim) <= 0 {
				continue
			}
			key := r.reqKey
			if _, ok := ann[r.limit]; ok {
				key = r.limit
			}
			bad(key, fmt.Errorf("proxy %s request %s exceeds limit %s; set %s and %s consistently", r.name, req.String(), lim.String(), r.reqKey, r.limit))
		}
	}
	if len(requests) > 0 {
		o.resources.Requests = requests
	}
	if len(limits) > 0 {
		o.resources.Limits = limits
	}

	if v, ok := ann[meshv1alpha1.AnnotationProxyLogLevel]; ok {
		if !slices.Contains(LogLevels, v) {
			bad(meshv1alpha1.AnnotationProxyLogLevel, fmt.Errorf("not one of %s", strings.Join(LogLevels, ", ")))
		} else {
			o.logLevel = v
		}
	}
	if v, ok := ann[meshv1alpha1.AnnotationProxyImage]; ok {
		if v == "" || strings.ContainsFunc(v, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
			bad(meshv1alpha1.AnnotationProxyImage, errors.New("not an image reference"))
		} else {
			o.image = v
		}
	}
	return o, errors.Join(errs...)
}

func setQuantity(list corev1.ResourceList, name corev1.ResourceName, q resource.Quantity) {
	if !q.IsZero() {
		list[name] = q
	}
}
