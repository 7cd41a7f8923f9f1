package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"

	"github.com/weft-mesh/weft/internal/debugapi"
	"github.com/weft-mesh/weft/internal/ingest"
)

// Input is where the objects of an analysis come from.
type Input struct {
	// Files are manifest files and directories (not recursive), "-" for
	// stdin.
	Files []string
	Stdin io.Reader
	// Kustomizations are directories built as `kubectl kustomize` does.
	Kustomizations []string
	// Live are objects read from a cluster (ListCluster). An object of the
	// files or kustomizations with the same kind, namespace and name
	// replaces the cluster's: the manifests are what is about to be
	// applied.
	Live []*unstructured.Unstructured
}

// Read reads the input into a bundle.
func Read(in Input) (*Manifests, error) {
	files := &Manifests{Bundle: ingest.Bundle{ClusterDomain: ingest.DefaultClusterDomain}}
	if err := files.readFiles(in.Files, in.Stdin); err != nil {
		return nil, err
	}
	for _, dir := range in.Kustomizations {
		b, err := Kustomize(dir)
		if err != nil {
			return nil, err
		}
		if err := files.read("kustomization "+dir, bytes.NewReader(b)); err != nil {
			return nil, err
		}
	}
	if len(in.Live) == 0 {
		files.allocateClusterIPs()
		return files, nil
	}
	given := map[string]bool{}
	for _, u := range files.All {
		given[objectKey(u)] = true
	}
	m := &Manifests{Bundle: ingest.Bundle{ClusterDomain: ingest.DefaultClusterDomain}}
	for _, u := range in.Live {
		if given[objectKey(u)] {
			continue
		}
		if err := m.add("the cluster", u); err != nil {
			return nil, err
		}
	}
	for _, u := range files.All {
		if err := m.add("the manifests", u); err != nil {
			return nil, err
		}
	}
	m.allocateClusterIPs()
	return m, nil
}

// objectKey identifies an object across API versions of its kind; an
// object without a namespace is keyed as kubectl apply would place it.
func objectKey(u *unstructured.Unstructured) string {
	ns := u.GetNamespace()
	gvk := u.GroupVersionKind()
	if ns == "" && gvk.Kind != "Namespace" && gvk.Kind != "MeshIdentity" {
		ns = "default"
	}
	return gvk.Group + "/" + gvk.Kind + "/" + ns + "/" + u.GetName()
}

// Kustomize builds a kustomization directory as `kubectl kustomize` does.
func Kustomize(dir string) ([]byte, error) {
	if _, err := os.Stat(dir); err != nil {
		return nil, fmt.Errorf("-k %s: %w", dir, err)
	}
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	res, err := k.Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		return nil, fmt.Errorf("-k %s: %w", dir, err)
	}
	b, err := res.AsYaml()
	if err != nil {
		return nil, fmt.Errorf("-k %s: %w", dir, err)
	}
	return b, nil
}

// LiveKinds are the kinds ListCluster reads: what the controller's cache
// holds for ingest.
var LiveKinds = []schema.GroupVersionKind{
	{Version: "v1", Kind: "Namespace"},
	{Version: "v1", Kind: "Service"},
	{Version: "v1", Kind: "Pod"},
	{Group: "discovery.k8s.io", Version: "v1", Kind: "EndpointSlice"},
	{Group: "mesh.weft.dev", Version: "v1alpha1", Kind: "TrafficSplit"},
	{Group: "mesh.weft.dev", Version: "v1alpha1", Kind: "RetryPolicy"},
	{Group: "mesh.weft.dev", Version: "v1alpha1", Kind: "CircuitBreaker"},
	{Group: "mesh.weft.dev", Version: "v1alpha1", Kind: "MeshIdentity"},
	{Group: "mesh.weft.dev", Version: "v1alpha1", Kind: "AccessPolicy"},
	{Group: "mesh.weft.dev", Version: "v1alpha1", Kind: "FaultInjection"},
	{Group: "mesh.weft.dev", Version: "v1alpha1", Kind: "RateLimitPolicy"},
	{Group: "gateway.networking.k8s.io", Version: "v1", Kind: "HTTPRoute"},
	{Group: "gateway.networking.k8s.io", Version: "v1", Kind: "GRPCRoute"},
	{Group: "gateway.networking.k8s.io", Version: "v1", Kind: "TCPRoute"},
	{Group: "gateway.networking.k8s.io", Version: "v1beta1", Kind: "ReferenceGrant"},
	{Group: ingest.SMIGroup, Version: "v1alpha4", Kind: "TrafficSplit"},
}

// ListCluster reads every object of LiveKinds. A kind whose API the cluster
// does not serve (SMI's optional TrafficSplit, TCPRoute before Gateway API
// v1.6) is left out, as the controller leaves it out.
func ListCluster(ctx context.Context, r client.Reader) ([]*unstructured.Unstructured, error) {
	var objs []*unstructured.Unstructured
	for _, gvk := range LiveKinds {
		var l unstructured.UnstructuredList
		l.SetGroupVersionKind(gvk.GroupVersion().WithKind(gvk.Kind + "List"))
		if err := r.List(ctx, &l); err != nil {
			if apimeta.IsNoMatchError(err) || apierrors.IsNotFound(err) {
				continue
			}
			return nil, fmt.Errorf("listing %s: %w", gvk.GroupKind(), err)
		}
		for i := range l.Items {
			u := &l.Items[i]
			// Items of a list carry no kind of their own in every client.
			u.SetGroupVersionKind(gvk)
			objs = append(objs, u)
		}
	}
	return objs, nil
}

// DebugAPI reads the debug.weft.dev API through the API server.
type DebugAPI struct {
	// REST is any client of the API server (a clientset's discovery
	// client will do): only absolute paths are used.
	REST rest.Interface
}

// Proxies lists the proxies connected to the control plane, in namespace
// ns (all when empty).
func (d DebugAPI) Proxies(ctx context.Context, ns string) (*debugapi.ProxyList, error) {
	path := "/apis/" + debugapi.GroupVersion + "/" + debugapi.Resource
	if ns != "" {
		path = "/apis/" + debugapi.GroupVersion + "/namespaces/" + ns + "/" + debugapi.Resource
	}
	var l debugapi.ProxyList
	if err := d.get(ctx, path, &l); err != nil {
		return nil, err
	}
	sort.SliceStable(l.Items, func(i, j int) bool {
		a, b := l.Items[i], l.Items[j]
		return a.Namespace+"/"+a.Name < b.Namespace+"/"+b.Name
	})
	return &l, nil
}

// Proxy is one proxy's status.
func (d DebugAPI) Proxy(ctx context.Context, ns, name string) (*debugapi.Proxy, error) {
	var p debugapi.Proxy
	return &p, d.get(ctx, "/apis/"+debugapi.GroupVersion+"/namespaces/"+ns+"/"+debugapi.Resource+"/"+name, &p)
}

// Config is one proxy's live configuration.
func (d DebugAPI) Config(ctx context.Context, ns, name string) (*debugapi.ProxyConfig, error) {
	var c debugapi.ProxyConfig
	return &c, d.get(ctx, "/apis/"+debugapi.GroupVersion+"/namespaces/"+ns+"/"+debugapi.Resource+"/"+name+"/"+debugapi.ConfigSubresource, &c)
}

// ErrNoDebugAPI says the cluster does not serve debug.weft.dev.
var ErrNoDebugAPI = errors.New("the cluster does not serve the proxy status API (debug.weft.dev): install Weft with its APIService v1alpha1.debug.weft.dev (config/default or the Helm chart), then check it with kubectl get apiservice v1alpha1.debug.weft.dev")

func (d DebugAPI) get(ctx context.Context, path string, into any) error {
	res := d.REST.Get().AbsPath(path).Do(ctx)
	var code int
	res.StatusCode(&code)
	b, err := res.Raw()
	if err == nil {
		return json.Unmarshal(b, into)
	}
	// Both the API server and the controller answer errors with a Status;
	// its message says more than the client's generic text.
	var st metav1.Status
	if json.Unmarshal(b, &st) == nil && st.Message != "" {
		err = &apierrors.StatusError{ErrStatus: st}
	}
	switch {
	case code == http.StatusNotFound && !strings.Contains(st.Message, debugapi.NotConnected):
		// The API server's own 404: the group is not served.
		return ErrNoDebugAPI
	case code == http.StatusServiceUnavailable:
		return fmt.Errorf("the API server cannot reach the controller's proxy status API: %w (see kubectl get apiservice v1alpha1.debug.weft.dev -o yaml, and whether the weft-webhook Service has ready endpoints)", err)
	case code == http.StatusForbidden:
		return fmt.Errorf("%w (bind the ClusterRole weft-proxy-reader to read proxies)", err)
	}
	return err
}
