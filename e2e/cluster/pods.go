package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	xdscreds "google.golang.org/grpc/credentials/xds"
	"google.golang.org/grpc/orca"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/xds"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1alpha1 "github.com/weft-mesh/weft/api/v1alpha1"
	"github.com/weft-mesh/weft/internal/inject"
	"github.com/weft-mesh/weft/internal/workload"
)

// Names the box gives its pods' parts.
const (
	// AppContainer is the workload container of every pod.
	AppContainer = "app"
	// AppImage is the image the pods declare; the box runs the workload
	// in-process instead of pulling it.
	AppImage = "ghcr.io/weft-mesh/e2e-echo:dev"
	// PortName is the name of the workload's gRPC container port.
	PortName = "grpc"
	// NodeName is the node every pod is bound to. A pod bound to a node is
	// deleted gracefully (it stays Terminating until its kubelet confirms),
	// as in a real cluster.
	NodeName = "box"
)

// PodSpec describes a workload pod.
type PodSpec struct {
	Namespace, Name string
	// ServiceAccount is the pod's identity in the mesh; default "default".
	ServiceAccount string
	Labels         map[string]string
	// IP is the pod's address; the box puts it on the sandbox's loopback.
	IP string
	// Port is where the workload serves the echo service through gRPC's
	// xDS server; 0 for a pod that only calls others.
	Port int32
}

// Pod is a running pod of the box: an API object, its mounted volumes and
// its workload.
type Pod struct {
	c    *Cluster
	Spec PodSpec
	// Object is the pod as created, after injection.
	Object *corev1.Pod
	// Bootstrap is the gRPC xDS bootstrap the injector gave the workload,
	// with its mount paths pointing at the box's directories.
	Bootstrap []byte
	// Behaviour switches how the workload answers.
	Behaviour Behaviour
	dir       string

	mountOnce sync.Once
	mounted   chan struct{}
	mountMu   sync.Mutex
	missing   string // why the volumes are not mounted yet

	ctx     context.Context
	cancel  context.CancelFunc
	server  *xds.GRPCServer
	serving atomic.Bool
	servErr atomic.Value // error of the last serving mode change
	ready   chan bool    // desired Ready condition, latest wins
	stopped chan struct{}

	mu       sync.Mutex
	resolver resolver.Builder
	conns    map[string]*grpc.ClientConn
}

func podKey(ns, name string) string { return ns + "/" + name }

// CreateNamespace creates a namespace labelled for the mesh.
func (c *Cluster) CreateNamespace(ctx context.Context, name string) error {
	return c.create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
		Name:   name,
		Labels: map[string]string{meshv1alpha1.LabelInject: meshv1alpha1.NamespaceInjectEnabled},
	}})
}

// CreateService creates a ClusterIP Service with one gRPC port (named
// grpc) that targets the pods' grpc container port.
func (c *Cluster) CreateService(ctx context.Context, ns, name string, port int32, selector map[string]string) error {
	return c.create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.ServiceSpec{
			Selector: selector,
			Ports: []corev1.ServicePort{{
				Name: PortName, Port: port, Protocol: corev1.ProtocolTCP,
				TargetPort: intstr.FromString(PortName),
			}},
		},
	})
}

// RunPod creates the pod through the injector (as the admission webhook
// would change it), binds it, gives it its address, mounts its volumes
// once the identity Secret and trust bundle exist, and starts its
// workload. It returns when the workload runs; a server pod may still wait
// for its xDS listener (see WaitServing).
func (c *Cluster) RunPod(ctx context.Context, spec PodSpec) (*Pod, error) {
	if spec.ServiceAccount == "" {
		spec.ServiceAccount = "default"
	}
	ip, err := netip.ParseAddr(spec.IP)
	if err != nil {
		return nil, fmt.Errorf("pod %s: IP: %w", spec.Name, err)
	}
	if err := addLoopbackAddress(ip); err != nil {
		return nil, err
	}
	var ns corev1.Namespace
	if err := c.Client.Get(ctx, client.ObjectKey{Name: spec.Namespace}, &ns); err != nil {
		return nil, fmt.Errorf("pod %s: namespace: %w", spec.Name, err)
	}
	if spec.ServiceAccount != "default" {
		if err := c.create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: spec.Namespace, Name: spec.ServiceAccount}}); err != nil {
			return nil, err
		}
	}
	app := corev1.Container{Name: AppContainer, Image: AppImage}
	if spec.Port > 0 {
		app.Ports = []corev1.ContainerPort{{Name: PortName, ContainerPort: spec.Port, Protocol: corev1.ProtocolTCP}}
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Namespace:   spec.Namespace,
			Name:        spec.Name,
			Labels:      spec.Labels,
			Annotations: map[string]string{meshv1alpha1.AnnotationInject: meshv1alpha1.InjectGRPCAgent},
		},
		Spec: corev1.PodSpec{ServiceAccountName: spec.ServiceAccount, NodeName: NodeName, Containers: []corev1.Container{app}},
	}
	res, err := c.Injector.Inject(pod, ns.Labels)
	if err != nil {
		return nil, fmt.Errorf("pod %s: injection: %w", spec.Name, err)
	}
	if res.Skip != nil {
		return nil, fmt.Errorf("pod %s: not injected: %s: %s", spec.Name, res.Skip.Reason, res.Skip.Message)
	}
	p := &Pod{
		c: c, Spec: spec, Object: res.Pod,
		dir:     filepath.Join(c.WorkDir, "pods", spec.Namespace, spec.Name),
		mounted: make(chan struct{}),
		ready:   make(chan bool, 1),
		stopped: make(chan struct{}),
		conns:   map[string]*grpc.ClientConn{},
	}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	if err := c.Client.Create(ctx, p.Object.DeepCopy()); err != nil {
		return nil, fmt.Errorf("creating pod %s/%s: %w", spec.Namespace, spec.Name, err)
	}
	c.mu.Lock()
	c.pods[podKey(spec.Namespace, spec.Name)] = p
	c.mu.Unlock()
	go p.statusLoop()
	p.setReady(false)
	c.kubelet.trigger(p)

	select {
	case <-p.mounted:
	case <-time.After(30 * time.Second):
		p.mountMu.Lock()
		why := p.missing
		p.mountMu.Unlock()
		return nil, fmt.Errorf("pod %s/%s: volumes not mounted within 30s: %s", spec.Namespace, spec.Name, why)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if p.Bootstrap, err = p.bootstrap(); err != nil {
		return nil, err
	}
	if spec.Port == 0 {
		p.setReady(true)
		return p, nil
	}
	return p, p.serve()
}

// bootstrap is the injected GRPC_XDS_BOOTSTRAP_CONFIG with every path
// under a volume mount of the app container moved to the box's directory
// for that volume: the files are where the kubelet would mount them.
func (p *Pod) bootstrap() ([]byte, error) {
	var app *corev1.Container
	for i := range p.Object.Spec.Containers {
		if p.Object.Spec.Containers[i].Name == AppContainer {
			app = &p.Object.Spec.Containers[i]
		}
	}
	raw := ""
	for _, e := range app.Env {
		if e.Name == inject.EnvGRPCBootstrapConfig {
			raw = e.Value
		}
	}
	if raw == "" {
		return nil, fmt.Errorf("pod %s: the injector set no %s", p.Spec.Name, inject.EnvGRPCBootstrapConfig)
	}
	var doc any
	if err := json.Unmarshal([]byte(raw), &doc); err != nil {
		return nil, fmt.Errorf("pod %s: bootstrap: %w", p.Spec.Name, err)
	}
	var walk func(v any) any
	walk = func(v any) any {
		switch t := v.(type) {
		case map[string]any:
			for k, x := range t {
				t[k] = walk(x)
			}
		case []any:
			for i, x := range t {
				t[i] = walk(x)
			}
		case string:
			for _, m := range app.VolumeMounts {
				if t == m.MountPath || strings.HasPrefix(t, m.MountPath+"/") {
					return p.volumeDir(m.Name) + strings.TrimPrefix(t, m.MountPath)
				}
			}
		}
		return v
	}
	return json.Marshal(walk(doc))
}

func (p *Pod) volumeDir(volume string) string { return filepath.Join(p.dir, "volumes", volume) }

// NodeID is the pod's xDS node ID.
func (p *Pod) NodeID() string { return workload.NodeID(p.Spec.Name, p.Spec.Namespace) }

// Address is the workload's listening address.
func (p *Pod) Address() string {
	return net.JoinHostPort(p.Spec.IP, strconv.Itoa(int(p.Spec.Port)))
}

func (p *Pod) serve() error {
	lis, err := net.Listen("tcp", p.Address())
	if err != nil {
		return fmt.Errorf("pod %s: %w", p.Spec.Name, err)
	}
	creds, err := xdscreds.NewServerCredentials(xdscreds.ServerOptions{FallbackCreds: insecure.NewCredentials()})
	if err != nil {
		return err
	}
	srv, err := xds.NewGRPCServer(
		grpc.Creds(creds),
		xds.BootstrapContentsForTesting(p.Bootstrap),
		orca.CallMetricsServerOption(p.Behaviour.metrics()),
		xds.ServingModeCallback(func(_ net.Addr, args xds.ServingModeChangeArgs) {
			serving := args.Mode == connectivity.ServingModeServing
			p.serving.Store(serving)
			if args.Err != nil {
				p.servErr.Store(args.Err)
			}
			p.setReady(serving)
		}),
	)
	if err != nil {
		_ = lis.Close()
		return fmt.Errorf("pod %s: xDS server: %w", p.Spec.Name, err)
	}
	srv.RegisterService(&echoServiceDesc, &echoHandler{pod: p.Spec.Name, b: &p.Behaviour})
	p.server = srv
	go func() { _ = srv.Serve(lis) }()
	return nil
}

// Serving reports whether the workload's xDS server has its listener and
// accepts calls.
func (p *Pod) Serving() bool { return p.serving.Load() }

// WaitServing waits until the workload's xDS server serves.
func (p *Pod) WaitServing(ctx context.Context, timeout time.Duration) error {
	err := poll(ctx, timeout, func() (bool, error) { return p.Serving(), nil })
	if err != nil {
		last, _ := p.servErr.Load().(error)
		return fmt.Errorf("pod %s/%s: xDS server not serving: %w (last serving error: %w)", p.Spec.Namespace, p.Spec.Name, err, last)
	}
	return nil
}

func (p *Pod) setReady(ready bool) {
	select {
	case <-p.ready:
	default:
	}
	p.ready <- ready
}

// statusLoop writes the pod's status as its kubelet would: Running with
// its IP, and Ready following the workload (a server is ready once its
// xDS listener serves).
func (p *Pod) statusLoop() {
	for {
		select {
		case <-p.ctx.Done():
			return
		case ready := <-p.ready:
			_ = retry.OnError(retry.DefaultBackoff, func(err error) bool { return !apierrors.IsNotFound(err) && p.ctx.Err() == nil }, func() error {
				return p.writeStatus(ready)
			})
		}
	}
}

func (p *Pod) writeStatus(ready bool) error {
	var pod corev1.Pod
	if err := p.c.Client.Get(p.ctx, client.ObjectKey{Namespace: p.Spec.Namespace, Name: p.Spec.Name}, &pod); err != nil {
		return err
	}
	cond := func(t corev1.PodConditionType, ok bool) corev1.PodCondition {
		s := corev1.ConditionFalse
		if ok {
			s = corev1.ConditionTrue
		}
		for _, c := range pod.Status.Conditions {
			if c.Type == t && c.Status == s {
				return c
			}
		}
		return corev1.PodCondition{Type: t, Status: s, LastTransitionTime: metav1.Now()}
	}
	start := pod.Status.StartTime
	if start == nil {
		start = ptr.To(metav1.Now())
	}
	pod.Status = corev1.PodStatus{
		Phase:     corev1.PodRunning,
		HostIP:    "127.0.0.1",
		HostIPs:   []corev1.HostIP{{IP: "127.0.0.1"}},
		PodIP:     p.Spec.IP,
		PodIPs:    []corev1.PodIP{{IP: p.Spec.IP}},
		StartTime: start,
		Conditions: []corev1.PodCondition{
			cond(corev1.PodScheduled, true),
			cond(corev1.PodInitialized, true),
			cond(corev1.ContainersReady, ready),
			cond(corev1.PodReady, ready),
		},
		ContainerStatuses: []corev1.ContainerStatus{{
			Name: AppContainer, Image: AppImage, Ready: ready, Started: ptr.To(true),
			State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: *start}},
		}},
	}
	return p.c.Client.Status().Update(p.ctx, &pod)
}

// Conn is a gRPC channel from this pod to xds:///<target>, e.g.
// "checkout.shop.svc.cluster.local:8080": name resolution, routing, load
// balancing and mTLS all come from the pod's xDS configuration.
func (p *Pod) Conn(target string) (*grpc.ClientConn, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if cc := p.conns[target]; cc != nil {
		return cc, nil
	}
	if p.resolver == nil {
		r, err := xds.NewXDSResolverWithConfigForTesting(p.Bootstrap)
		if err != nil {
			return nil, fmt.Errorf("pod %s: xDS resolver: %w", p.Spec.Name, err)
		}
		p.resolver = r
	}
	creds, err := xdscreds.NewClientCredentials(xdscreds.ClientOptions{FallbackCreds: insecure.NewCredentials()})
	if err != nil {
		return nil, err
	}
	cc, err := grpc.NewClient("xds:///"+target, grpc.WithResolvers(p.resolver), grpc.WithTransportCredentials(creds))
	if err != nil {
		return nil, err
	}
	p.conns[target] = cc
	return cc, nil
}

// Delete deletes the pod gracefully, as `kubectl delete pod` does: it
// becomes Terminating, its endpoints turn not ready, and its workload
// keeps serving (a preStop drain) until Remove.
func (p *Pod) Delete(ctx context.Context) error {
	return p.c.Client.Delete(ctx, p.Object.DeepCopy(), client.GracePeriodSeconds(30))
}

// Remove ends the workload and then the pod, as the kubelet does when a
// deleted pod's drain is over, and takes its address off the network.
func (p *Pod) Remove(ctx context.Context) error {
	p.stopWorkload()
	err := p.c.Client.Delete(ctx, p.Object.DeepCopy(), client.GracePeriodSeconds(0))
	if apierrors.IsNotFound(err) {
		err = nil
	}
	p.c.mu.Lock()
	delete(p.c.pods, podKey(p.Spec.Namespace, p.Spec.Name))
	p.c.mu.Unlock()
	if ip, perr := netip.ParseAddr(p.Spec.IP); perr == nil {
		err = errors.Join(err, removeLoopbackAddress(ip))
	}
	return err
}

func (p *Pod) stopWorkload() {
	p.mu.Lock()
	conns := p.conns
	p.conns = map[string]*grpc.ClientConn{}
	p.mu.Unlock()
	for _, cc := range conns {
		_ = cc.Close()
	}
	if p.server != nil {
		done := make(chan struct{})
		go func() { p.server.GracefulStop(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			p.server.Stop()
		}
	}
	p.cancel()
}

// WaitReady waits until the pod is what `kubectl rollout status` would
// call available: its workload serves, its Ready condition is True, and
// every Service that selects it lists it as a ready endpoint. Clients may
// still be a push behind.
func (p *Pod) WaitReady(ctx context.Context, timeout time.Duration) error {
	if p.Spec.Port > 0 {
		if err := p.WaitServing(ctx, timeout); err != nil {
			return err
		}
	}
	err := poll(ctx, timeout, func() (bool, error) {
		var pod corev1.Pod
		if err := p.c.Client.Get(ctx, client.ObjectKey{Namespace: p.Spec.Namespace, Name: p.Spec.Name}, &pod); err != nil {
			return false, err
		}
		if !podReady(&pod) {
			return false, nil
		}
		var svcs corev1.ServiceList
		if err := p.c.Client.List(ctx, &svcs, client.InNamespace(p.Spec.Namespace)); err != nil {
			return false, err
		}
		for _, svc := range svcs.Items {
			if len(svc.Spec.Selector) == 0 || !labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(pod.Labels)) {
				continue
			}
			var es discoveryv1.EndpointSlice
			err := p.c.Client.Get(ctx, client.ObjectKey{Namespace: svc.Namespace, Name: sliceName(svc.Name)}, &es)
			if apierrors.IsNotFound(err) {
				return false, nil
			}
			if err != nil {
				return false, err
			}
			listed := false
			for _, ep := range es.Endpoints {
				if ep.TargetRef != nil && ep.TargetRef.Name == p.Spec.Name && ptr.Deref(ep.Conditions.Ready, false) {
					listed = true
				}
			}
			if !listed {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("pod %s/%s not ready: %w", p.Spec.Namespace, p.Spec.Name, err)
	}
	return nil
}
