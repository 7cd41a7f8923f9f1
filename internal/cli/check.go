package cli

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/duration"
	"k8s.io/apimachinery/pkg/version"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1alpha1 "github.com/weft-mesh/weft/api/v1alpha1"
	"github.com/weft-mesh/weft/internal/workload"
)

// Check outcomes.
const (
	CheckOK      = "ok"
	CheckWarning = "warning"
	CheckFailed  = "failed"
)

// CheckResult is the outcome of one check.
type CheckResult struct {
	Name   string `json:"name"`
	Status string `json:"status"`
	Detail string `json:"detail"`
	// Fix says what to do when the check did not pass.
	Fix string `json:"fix,omitempty"`
}

// CheckCluster is what the checks read.
type CheckCluster struct {
	Client client.Client
	// ServerVersion is the API server's version.
	ServerVersion func() (*version.Info, error)
	Debug         DebugAPI
}

// CheckOptions say what to check.
type CheckOptions struct {
	// Pre checks only what an install needs.
	Pre bool
	// Namespace is the control plane's.
	Namespace string
	// DryRunNamespace is where the webhook check asks for a pod to be
	// created, dry run.
	DryRunNamespace string
	// Controller is the controller's Deployment; XDSSecret its xDS
	// certificate's Secret when the Deployment does not say;
	// Webhook the MutatingWebhookConfiguration; APIService the proxy
	// status API's.
	Controller, XDSSecret, Webhook, APIService string
	// Now is the time certificates are judged at.
	Now time.Time
}

// DefaultCheckOptions are the names a default install uses.
func DefaultCheckOptions() CheckOptions {
	return CheckOptions{ //nolint:gosec // names of objects, not credentials
		Namespace: "weft-system", DryRunNamespace: "default",
		Controller: "weft-controller", XDSSecret: "weft-xds-tls", Webhook: "weft-injector", APIService: "v1alpha1.debug.weft.dev",
	}
}

// Failed counts the results that failed.
func Failed(results []CheckResult) int {
	n := 0
	for _, r := range results {
		if r.Status == CheckFailed {
			n++
		}
	}
	return n
}

// Minimum versions: CRD validation rules (CEL) need 1.25; native sidecars
// (Envoy starting before the application and not holding Jobs open) 1.29.
const (
	minMinor    = 25
	nativeMinor = 29
	// certWarnBefore is how close to expiry a serving certificate is
	// reported.
	certWarnBefore = 7 * 24 * time.Hour
)

// Check runs the install checks, then, unless opts.Pre, the checks of a
// running mesh.
func Check(ctx context.Context, c CheckCluster, opts CheckOptions) []CheckResult {
	if opts.Now.IsZero() {
		opts.Now = time.Now()
	}
	ch := &checker{ctx: ctx, c: c, o: opts}
	ch.kubernetes()
	ch.crds("Gateway API", "gateway.networking.k8s.io", []crdWant{
		{name: "httproutes.gateway.networking.k8s.io", version: "v1"},
		{name: "grpcroutes.gateway.networking.k8s.io", version: "v1"},
		{name: "referencegrants.gateway.networking.k8s.io", version: "v1beta1"},
	}, "install Gateway API's standard channel: kubectl apply --server-side -f https://github.com/kubernetes-sigs/gateway-api/releases/download/v1.6.3/standard-install.yaml")
	ch.crds("cert-manager", "cert-manager.io", []crdWant{
		{name: "certificates.cert-manager.io", version: "v1"},
		{name: "issuers.cert-manager.io", version: "v1"},
		{name: "clusterissuers.cert-manager.io", version: "v1"},
	}, "install cert-manager (https://cert-manager.io/docs/installation/), with its CRDs")
	ch.identities()
	if !opts.Pre {
		ch.controller()
		ch.xdsCertificate()
		ch.proxyAPI()
		proxyVersion := ch.webhook()
		ch.meshedPods(proxyVersion)
		ch.proxies()
	}
	return ch.out
}

type checker struct {
	ctx context.Context
	c   CheckCluster
	o   CheckOptions
	out []CheckResult
}

func (ch *checker) add(name, status, detail, fix string) {
	if status == CheckOK {
		fix = ""
	}
	ch.out = append(ch.out, CheckResult{Name: name, Status: status, Detail: detail, Fix: fix})
}

func (ch *checker) kubernetes() {
	const name = "Kubernetes API"
	v, err := ch.c.ServerVersion()
	if err != nil {
		ch.add(name, CheckFailed, "cannot reach the API server: "+err.Error(), "check the kubeconfig, --context and --server")
		return
	}
	minor, _ := strconv.Atoi(strings.TrimRight(v.Minor, "+"))
	switch {
	case v.Major != "1" || minor < minMinor:
		ch.add(name, CheckFailed, fmt.Sprintf("%s: Weft needs Kubernetes 1.%d or later (CRD validation rules)", v.GitVersion, minMinor), "upgrade the cluster")
	case minor < nativeMinor:
		ch.add(name, CheckWarning, fmt.Sprintf("%s: sidecars are injected as ordinary containers; Kubernetes 1.%d or later runs them as native sidecars, started before the application and not holding Jobs open", v.GitVersion, nativeMinor), "upgrade the cluster to 1.29 or later")
	default:
		ch.add(name, CheckOK, v.GitVersion, "")
	}
}

type crdWant struct{ name, version string }

func (ch *checker) crds(name, group string, want []crdWant, fix string) {
	name += " CRDs"
	var found []string
	bundle := ""
	for _, w := range want {
		var crd apiextensionsv1.CustomResourceDefinition
		err := ch.c.Client.Get(ch.ctx, client.ObjectKey{Name: w.name}, &crd)
		if apierrors.IsNotFound(err) {
			ch.add(name, CheckFailed, "CustomResourceDefinition "+w.name+" is not installed", fix)
			return
		}
		if err != nil {
			ch.add(name, CheckFailed, "reading CustomResourceDefinition "+w.name+": "+err.Error(), "check that you may read CustomResourceDefinitions")
			return
		}
		served := slices.ContainsFunc(crd.Spec.Versions, func(v apiextensionsv1.CustomResourceDefinitionVersion) bool { return v.Name == w.version && v.Served })
		if !served {
			ch.add(name, CheckFailed, fmt.Sprintf("%s does not serve %s/%s", w.name, group, w.version), fix)
			return
		}
		found = append(found, crd.Spec.Names.Kind+" "+w.version)
		if v := crd.Annotations["gateway.networking.k8s.io/bundle-version"]; v != "" {
			bundle = v
		}
	}
	detail := strings.Join(found, ", ")
	if bundle != "" {
		detail = bundle + ": " + detail
	}
	ch.add(name, CheckOK, detail, "")
}

func (ch *checker) identities() {
	const name = "MeshIdentity"
	var list meshv1alpha1.MeshIdentityList
	if err := ch.c.Client.List(ch.ctx, &list); err != nil {
		if apimeta.IsNoMatchError(err) || apierrors.IsNotFound(err) {
			if ch.o.Pre {
				ch.add(name, CheckOK, "Weft's CRDs are not installed yet", "")
				return
			}
			ch.add(name, CheckFailed, "Weft's CRDs are not installed", "install Weft (config/default, or the Helm chart charts/weft)")
			return
		}
		ch.add(name, CheckFailed, "listing MeshIdentities: "+err.Error(), "check that you may list meshidentities.mesh.weft.dev")
		return
	}
	if len(list.Items) == 0 {
		if ch.o.Pre {
			ch.add(name, CheckOK, "none yet: the Helm chart creates one (meshIdentity.create)", "")
			return
		}
		ch.add(name, CheckFailed, "no MeshIdentity: workloads get no certificate, so no mTLS and no xDS", "create one naming your cert-manager issuer (config/samples/mesh_v1alpha1_meshidentity.yaml)")
		return
	}
	for _, mi := range list.Items {
		ch.issuer(mi)
		if ch.o.Pre {
			continue
		}
		ready := apimeta.FindStatusCondition(mi.Status.Conditions, "Ready")
		switch {
		case ready == nil:
			ch.add(name+" "+mi.Name, CheckFailed, "not reconciled yet: no Ready condition", "check that weft-controller runs (see the controller check)")
		case ready.Status != metav1.ConditionTrue:
			ch.add(name+" "+mi.Name, CheckFailed, fmt.Sprintf("Ready=%s %s: %s", ready.Status, ready.Reason, ready.Message), "kubectl describe meshidentity "+mi.Name)
		default:
			ch.add(name+" "+mi.Name, CheckOK, "Ready", "")
		}
	}
}

// issuer checks that the issuer a MeshIdentity names exists and is ready.
func (ch *checker) issuer(mi meshv1alpha1.MeshIdentity) {
	ref := mi.Spec.IssuerRef
	name := fmt.Sprintf("issuer of MeshIdentity %s", mi.Name)
	kind := ref.Kind
	if kind == "" {
		kind = cmapi.ClusterIssuerKind
	}
	if ref.Group != "" && ref.Group != "cert-manager.io" {
		ch.add(name, CheckOK, fmt.Sprintf("%s %s.%s: an external issuer, not checked", kind, ref.Name, ref.Group), "")
		return
	}
	if kind == cmapi.IssuerKind {
		// An Issuer of this name in each meshed namespace.
		ch.add(name, CheckOK, "Issuer "+ref.Name+" in each meshed namespace; the MeshIdentity's conditions say which are missing", "")
		return
	}
	var iss cmapi.ClusterIssuer
	err := ch.c.Client.Get(ch.ctx, client.ObjectKey{Name: ref.Name}, &iss)
	switch {
	case apierrors.IsNotFound(err):
		ch.add(name, CheckFailed, "ClusterIssuer "+ref.Name+" does not exist", "create it (the Helm chart's meshCA.create makes a CA issuer), or point spec.issuerRef at yours")
		return
	case err != nil:
		ch.add(name, CheckFailed, "reading ClusterIssuer "+ref.Name+": "+err.Error(), "check that cert-manager's CRDs are installed and that you may read clusterissuers")
		return
	}
	for _, c := range iss.Status.Conditions {
		if c.Type != cmapi.IssuerConditionReady {
			continue
		}
		if c.Status == cmmeta.ConditionTrue {
			ch.add(name, CheckOK, "ClusterIssuer "+ref.Name+" Ready", "")
		} else {
			ch.add(name, CheckFailed, fmt.Sprintf("ClusterIssuer %s not Ready: %s", ref.Name, c.Message), "kubectl describe clusterissuer "+ref.Name)
		}
		return
	}
	ch.add(name, CheckFailed, "ClusterIssuer "+ref.Name+" has no Ready condition: cert-manager has not looked at it", "check that cert-manager's controller runs")
}

func (ch *checker) controller() {
	const name = "controller"
	var d appsv1.Deployment
	err := ch.c.Client.Get(ch.ctx, client.ObjectKey{Namespace: ch.o.Namespace, Name: ch.o.Controller}, &d)
	if err != nil {
		ch.add(name, CheckFailed, fmt.Sprintf("Deployment %s/%s: %v", ch.o.Namespace, ch.o.Controller, err), "install Weft, or give its namespace with --control-plane-namespace")
		return
	}
	want := int32(1)
	if d.Spec.Replicas != nil {
		want = *d.Spec.Replicas
	}
	inspect := fmt.Sprintf("kubectl -n %s describe deployment %s; kubectl -n %s logs deployment/%s", d.Namespace, d.Name, d.Namespace, d.Name)
	switch {
	case d.Status.AvailableReplicas == 0:
		ch.add(name, CheckFailed, fmt.Sprintf("no replica of %s/%s is available (0/%d)", d.Namespace, d.Name, want), inspect)
	case d.Status.AvailableReplicas < want:
		ch.add(name, CheckWarning, fmt.Sprintf("%d/%d replicas available", d.Status.AvailableReplicas, want), inspect)
	default:
		ch.add(name, CheckOK, fmt.Sprintf("%d/%d replicas available", d.Status.AvailableReplicas, want), "")
	}
}

// xdsCertificate checks the certificate proxies verify the xDS server by.
func (ch *checker) xdsCertificate() {
	const name = "xDS serving certificate"
	secret := ch.o.XDSSecret
	var d appsv1.Deployment
	if err := ch.c.Client.Get(ch.ctx, client.ObjectKey{Namespace: ch.o.Namespace, Name: ch.o.Controller}, &d); err == nil {
		for _, v := range d.Spec.Template.Spec.Volumes {
			if v.Name == "xds-cert" && v.Secret != nil {
				secret = v.Secret.SecretName
			}
		}
	}
	fix := fmt.Sprintf("kubectl -n %s describe certificate weft-xds (cert-manager writes Secret %s)", ch.o.Namespace, secret)
	var s corev1.Secret
	if err := ch.c.Client.Get(ch.ctx, client.ObjectKey{Namespace: ch.o.Namespace, Name: secret}, &s); err != nil {
		ch.add(name, CheckFailed, fmt.Sprintf("Secret %s/%s: %v", ch.o.Namespace, secret, err), fix)
		return
	}
	block, _ := pem.Decode(s.Data[corev1.TLSCertKey])
	if block == nil {
		ch.add(name, CheckFailed, fmt.Sprintf("Secret %s/%s holds no certificate in tls.crt", ch.o.Namespace, secret), fix)
		return
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		ch.add(name, CheckFailed, fmt.Sprintf("Secret %s/%s: tls.crt: %v", ch.o.Namespace, secret, err), fix)
		return
	}
	if len(s.Data["ca.crt"]) == 0 {
		ch.add(name, CheckFailed, fmt.Sprintf("Secret %s/%s has no ca.crt: the controller cannot verify proxies' certificates", ch.o.Namespace, secret), fix)
		return
	}
	left := cert.NotAfter.Sub(ch.o.Now)
	switch {
	case ch.o.Now.Before(cert.NotBefore):
		ch.add(name, CheckFailed, "not valid before "+cert.NotBefore.UTC().Format(time.RFC3339)+" (is a clock off?)", fix)
	case left <= 0:
		ch.add(name, CheckFailed, "expired at "+cert.NotAfter.UTC().Format(time.RFC3339)+": proxies cannot connect", fix+"; cert-manager should have renewed it")
	case left < certWarnBefore:
		ch.add(name, CheckWarning, fmt.Sprintf("expires in %s (%s) and was not renewed", duration.HumanDuration(left), cert.NotAfter.UTC().Format(time.RFC3339)), fix)
	default:
		ch.add(name, CheckOK, fmt.Sprintf("valid until %s (%s left) for %s", cert.NotAfter.UTC().Format(time.RFC3339), duration.HumanDuration(left), strings.Join(cert.DNSNames, ", ")), "")
	}
}

func (ch *checker) proxyAPI() {
	const name = "proxy status API"
	var api unstructured.Unstructured
	api.SetAPIVersion("apiregistration.k8s.io/v1")
	api.SetKind("APIService")
	fix := fmt.Sprintf("kubectl get apiservice %s -o yaml; the API server reaches it through Service %s/weft-webhook port 9445", ch.o.APIService, ch.o.Namespace)
	if err := ch.c.Client.Get(ch.ctx, client.ObjectKey{Name: ch.o.APIService}, &api); err != nil {
		ch.add(name, CheckFailed, "APIService "+ch.o.APIService+": "+err.Error(), "install Weft's config/default or Helm chart, which registers it")
		return
	}
	conds, _, _ := unstructured.NestedSlice(api.Object, "status", "conditions")
	for _, c := range conds {
		m, _ := c.(map[string]any)
		if m["type"] != "Available" {
			continue
		}
		if m["status"] == "True" {
			ch.add(name, CheckOK, "APIService "+ch.o.APIService+" Available", "")
		} else {
			ch.add(name, CheckFailed, fmt.Sprintf("APIService %s not Available: %v: %v", ch.o.APIService, m["reason"], m["message"]), fix)
		}
		return
	}
	ch.add(name, CheckFailed, "APIService "+ch.o.APIService+" has no Available condition yet", fix)
}

// webhook checks the injection webhook end to end: the API server calls it
// for a pod created dry run. It returns the proxy version the webhook
// injects, when it could tell.
func (ch *checker) webhook() string {
	const name = "injection webhook"
	var wh admissionregistrationv1.MutatingWebhookConfiguration
	if err := ch.c.Client.Get(ch.ctx, client.ObjectKey{Name: ch.o.Webhook}, &wh); err != nil {
		ch.add(name, CheckFailed, "MutatingWebhookConfiguration "+ch.o.Webhook+": "+err.Error(), "install Weft's config/default or Helm chart, which include it; or inject offline with kubectl weft inject")
		return ""
	}
	for _, w := range wh.Webhooks {
		if len(w.ClientConfig.CABundle) == 0 {
			ch.add(name, CheckFailed, "webhook "+w.Name+" has no caBundle: the API server cannot trust it", fmt.Sprintf("check cert-manager's cainjector (annotation cert-manager.io/inject-ca-from on %s), or run the controller with --manage-webhook-certificate", ch.o.Webhook))
			return ""
		}
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: ch.o.DryRunNamespace, GenerateName: "weft-check-",
			Annotations: map[string]string{meshv1alpha1.AnnotationInject: "true"},
		},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "registry.k8s.io/pause:3.10"}}},
	}
	err := ch.c.Client.Create(ch.ctx, pod, client.DryRunAll)
	switch {
	case apierrors.IsForbidden(err) && !strings.Contains(err.Error(), "admission webhook"):
		ch.add(name, CheckWarning, fmt.Sprintf("not checked end to end: you may not create pods in namespace %s (dry run)", ch.o.DryRunNamespace), "run the check as someone who may, or name another namespace with --dry-run-namespace")
		return ""
	case err != nil:
		ch.add(name, CheckFailed, "the API server could not have a pod injected (dry run): "+err.Error(),
			fmt.Sprintf("kubectl -n %s get endpointslices -l kubernetes.io/service-name=weft-webhook (ready endpoints?), and the controller's logs", ch.o.Namespace))
		return ""
	}
	w := workload.Of(pod, nil)
	if !w.Injected {
		ch.add(name, CheckFailed, fmt.Sprintf("a pod annotated %s: \"true\" in namespace %s came back without a sidecar", meshv1alpha1.AnnotationInject, ch.o.DryRunNamespace), "check the webhook's namespaceSelector and matchConditions in MutatingWebhookConfiguration "+ch.o.Webhook)
		return ""
	}
	ch.add(name, CheckOK, fmt.Sprintf("the API server had a pod injected (dry run, namespace %s) with proxy %s", ch.o.DryRunNamespace, w.ProxyVersion), "")
	return w.ProxyVersion
}

// maxNamed is how many pods a finding names.
const maxNamed = 5

// meshedPods checks that every pod that should be meshed has a sidecar, on
// the current proxy when that is known.
func (ch *checker) meshedPods(current string) {
	const name = "meshed pods"
	var nss corev1.NamespaceList
	if err := ch.c.Client.List(ch.ctx, &nss); err != nil {
		ch.add(name, CheckFailed, "listing namespaces: "+err.Error(), "check that you may list namespaces and pods")
		return
	}
	labels := map[string]map[string]string{}
	for _, ns := range nss.Items {
		labels[ns.Name] = ns.Labels
	}
	var pods corev1.PodList
	if err := ch.c.Client.List(ch.ctx, &pods); err != nil {
		ch.add(name, CheckFailed, "listing pods: "+err.Error(), "check that you may list pods")
		return
	}
	var missing, outdated []string
	var fixes []string
	meshed := 0
	for i := range pods.Items {
		p := &pods.Items[i]
		if p.Namespace == ch.o.Namespace || p.DeletionTimestamp != nil {
			continue
		}
		w := workload.Of(p, labels[p.Namespace])
		if !w.Meshed {
			continue
		}
		meshed++
		switch {
		case !w.Injected:
			missing = append(missing, p.Namespace+"/"+p.Name)
			fixes = append(fixes, workload.RestartHint(p))
		case current != "" && w.ProxyVersion != "" && w.ProxyVersion != current:
			outdated = append(outdated, fmt.Sprintf("%s/%s (%s)", p.Namespace, p.Name, w.ProxyVersion))
			fixes = append(fixes, workload.RestartHint(p))
		}
	}
	slices.Sort(fixes)
	fixes = slices.Compact(fixes)
	fix := strings.Join(first(fixes, maxNamed), "; ")
	switch {
	case len(missing) > 0:
		ch.add(name, CheckFailed, fmt.Sprintf("%d of %d meshed pods have no sidecar (created while the webhook was not there?): %s", len(missing), meshed, strings.Join(first(missing, maxNamed), ", ")), fix)
	case len(outdated) > 0:
		ch.add(name, CheckWarning, fmt.Sprintf("%d of %d meshed pods run an older proxy than %s: %s", len(outdated), meshed, current, strings.Join(first(outdated, maxNamed), ", ")), fix)
	default:
		detail := fmt.Sprintf("%d meshed pods, every one injected", meshed)
		if current != "" {
			detail += " with proxy " + current
		}
		ch.add(name, CheckOK, detail, "")
	}
}

// proxies checks that every connected proxy took its configuration.
func (ch *checker) proxies() {
	const name = "proxies"
	l, err := ch.c.Debug.Proxies(ch.ctx, "")
	if err != nil {
		fix := "see the proxy status API check"
		if errors.Is(err, ErrNoDebugAPI) {
			fix = "install Weft's APIService v1alpha1.debug.weft.dev"
		}
		ch.add(name, CheckFailed, err.Error(), fix)
		return
	}
	var rejected, stale, down []string
	for _, r := range l.Replicas {
		if r.Error != "" {
			down = append(down, r.Name+": "+r.Error)
		}
	}
	for _, p := range l.Items {
		switch {
		case p.Status.Nack != nil:
			rejected = append(rejected, fmt.Sprintf("%s/%s rejected %s %s: %s", p.Namespace, p.Name, p.Status.Nack.Type, p.Status.Nack.Version, p.Status.Nack.Message))
		case !p.Status.Synced:
			stale = append(stale, p.Namespace+"/"+p.Name)
		}
	}
	switch {
	case len(rejected) > 0:
		ch.add(name, CheckFailed, fmt.Sprintf("%d of %d proxies rejected their configuration: %s", len(rejected), len(l.Items), strings.Join(first(rejected, maxNamed), "; ")),
			"kubectl weft analyze (the object behind the rejected resource has a condition); kubectl weft proxy-status POD -n NAMESPACE for the whole message")
	case len(down) > 0:
		ch.add(name, CheckFailed, "controller replicas did not answer: "+strings.Join(down, "; "), fmt.Sprintf("kubectl -n %s get pods; replicas reach each other on port 9445", ch.o.Namespace))
	case len(stale) > 0:
		ch.add(name, CheckWarning, fmt.Sprintf("%d of %d proxies have not acknowledged the latest configuration yet: %s", len(stale), len(l.Items), strings.Join(first(stale, maxNamed), ", ")), "run the check again in a few seconds; kubectl weft proxy-status shows each type's versions")
	default:
		ch.add(name, CheckOK, fmt.Sprintf("%d proxies connected to %d replicas, all synced", len(l.Items), len(l.Replicas)), "")
	}
}

func first(s []string, n int) []string {
	if len(s) <= n {
		return s
	}
	return append(slices.Clone(s[:n]), fmt.Sprintf("and %d more", len(s)-n))
}
