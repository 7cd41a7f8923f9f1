package cluster

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/weft-mesh/weft/internal/xds/xdstest"
)

// The controller's pod, as the box fakes it: the proxy status API listens
// on this address (added to the sandbox's loopback), which the weft-webhook
// Service's EndpointSlice lists, and the API server's aggregation layer
// routes to (--enable-aggregator-routing, as clusters without kube-proxy on
// the control plane run).
const (
	ControllerPodIP   = "10.244.255.1"
	ControllerPodName = "weft-controller-0"
	ProxyAPIPort      = 9445
	webhookService    = "weft-webhook"
	frontProxyName    = "front-proxy-client"
)

// newCA is a CA for the box's own certificates, valid for a day.
func newCA(name string) (*xdstest.CA, error) {
	return xdstest.NewRoot(name, time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour))
}

// frontProxy makes the CA and client certificate the API server presents
// to aggregated APIs, and sets the flags that make it do so, as kubeadm
// does.
func (c *Cluster) frontProxy() (map[string]string, error) {
	dir := filepath.Join(c.WorkDir, "front-proxy")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	ca, err := newCA("front-proxy-ca")
	if err != nil {
		return nil, err
	}
	client, key, err := ca.IssueName(frontProxyName)
	if err != nil {
		return nil, err
	}
	files := map[string][]byte{"ca.crt": ca.PEM, "client.crt": client, "client.key": key}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			return nil, err
		}
	}
	return map[string]string{
		"requestheader-client-ca-file":       filepath.Join(dir, "ca.crt"),
		"requestheader-allowed-names":        frontProxyName,
		"requestheader-username-headers":     "X-Remote-User",
		"requestheader-group-headers":        "X-Remote-Group",
		"requestheader-extra-headers-prefix": "X-Remote-Extra-",
		"proxy-client-cert-file":             filepath.Join(dir, "client.crt"),
		"proxy-client-key-file":              filepath.Join(dir, "client.key"),
		"enable-aggregator-routing":          "true",
	}, nil
}

func (c *Cluster) proxyAPICertDir() string {
	return filepath.Join(c.WorkDir, "weft-controller", "webhook")
}

// installProxyAPI does for the proxy status API what config/default and
// cert-manager's cainjector would: the webhook's serving certificate (from
// a CA of its own, as config/certmanager/webhook.yaml), the weft-webhook
// Service with the controller's "pod" as its endpoint, the APIService of
// config/proxyapi with the CA as its caBundle, and the reader ClusterRole.
func (c *Cluster) installProxyAPI(ctx context.Context) error {
	if err := addLoopbackAddress(netip.MustParseAddr(ControllerPodIP)); err != nil {
		return err
	}
	ca, err := newCA("weft webhook CA")
	if err != nil {
		return err
	}
	host := webhookService + "." + ControlPlaneNamespace + ".svc"
	serving, key, err := ca.IssueName(host, host, host+".cluster.local")
	if err != nil {
		return err
	}
	if err := writeAtomic(c.proxyAPICertDir(), map[string][]byte{"tls.crt": serving, "tls.key": key, "ca.crt": ca.PEM}, 0o600); err != nil {
		return err
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ControlPlaneNamespace, Name: webhookService},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{
			{Name: "https-webhook", Port: 443},
			{Name: "https-proxy-api", Port: ProxyAPIPort},
		}},
	}
	if err := c.create(ctx, svc); err != nil {
		return err
	}
	// Not named <service>-box: the box's endpoint slice stand-in owns those
	// and deletes them for a Service without a selector, such as this one.
	if err := c.create(ctx, &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: ControlPlaneNamespace, Name: webhookService + "-controller",
			Labels: map[string]string{discoveryv1.LabelServiceName: webhookService, discoveryv1.LabelManagedBy: "weft-e2e-box"},
		},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints: []discoveryv1.Endpoint{{
			Addresses:  []string{ControllerPodIP},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)},
			TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: ControlPlaneNamespace, Name: ControllerPodName},
		}},
		Ports: []discoveryv1.EndpointPort{{Name: ptr.To("https-proxy-api"), Port: ptr.To[int32](ProxyAPIPort), Protocol: ptr.To(corev1.ProtocolTCP)}},
	}); err != nil {
		return err
	}
	var api unstructured.Unstructured
	if err := c.readManifest(filepath.Join("config", "proxyapi", "apiservice.yaml"), &api); err != nil {
		return err
	}
	api.SetAnnotations(nil)
	if err := unstructured.SetNestedField(api.Object, base64.StdEncoding.EncodeToString(ca.PEM), "spec", "caBundle"); err != nil {
		return err
	}
	if err := c.create(ctx, &api); err != nil {
		return err
	}
	var role rbacv1.ClusterRole
	if err := c.readManifest(filepath.Join("config", "proxyapi", "reader_role.yaml"), &role); err != nil {
		return err
	}
	return c.create(ctx, &role)
}

// recordController stands in for the controller's Deployment, as the box
// runs it: one replica, available once the process is ready.
func (c *Cluster) recordController(ctx context.Context) error {
	var d appsv1.Deployment
	if err := c.readManifest(filepath.Join("config", "manager", "controller.yaml"), &d); err != nil {
		return err
	}
	d.Name, d.Namespace, d.Spec.Replicas = "weft-controller", ControlPlaneNamespace, ptr.To[int32](1)
	d.Spec.Template.Spec.ServiceAccountName = ControllerServiceAccount
	if err := c.create(ctx, &d); err != nil {
		return err
	}
	d.Status = appsv1.DeploymentStatus{ObservedGeneration: d.Generation, Replicas: 1, ReadyReplicas: 1, AvailableReplicas: 1, UpdatedReplicas: 1}
	if err := c.Client.Status().Update(ctx, &d); err != nil {
		return fmt.Errorf("controller Deployment status: %w", err)
	}
	return nil
}

// AddUser gives a person credentials for the box's API server (no
// permissions beyond what RBAC objects grant them) and returns the path of
// their kubeconfig.
func (c *Cluster) AddUser(name string) (string, error) {
	user, err := c.env.AddUser(envtest.User{Name: name}, nil)
	if err != nil {
		return "", err
	}
	kc, err := user.KubeConfig()
	if err != nil {
		return "", err
	}
	path := filepath.Join(c.WorkDir, name+".kubeconfig")
	return path, os.WriteFile(path, kc, 0o600)
}

// setControllerEndpointReady marks the controller's endpoint of the
// weft-webhook Service ready or not, as the endpoint controller does after
// the pod's readiness probe.
func (c *Cluster) setControllerEndpointReady(ctx context.Context, ready bool) error {
	var es discoveryv1.EndpointSlice
	key := client.ObjectKey{Namespace: ControlPlaneNamespace, Name: webhookService + "-controller"}
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		if err := c.Client.Get(ctx, key, &es); err != nil {
			return err
		}
		for i := range es.Endpoints {
			es.Endpoints[i].Conditions.Ready = ptr.To(ready)
		}
		return c.Client.Update(ctx, &es)
	})
}
