package config_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	meshv1alpha1 "github.com/weft-mesh/weft/api/v1alpha1"
	"github.com/weft-mesh/weft/internal/manifest"
	"github.com/weft-mesh/weft/internal/testenv"
)

// The names the controller binary and the injected proxies depend on.
const (
	systemNamespace = "weft-system"
	deploymentName  = "weft-controller"
	xdsService      = "weft-xds"
	webhookConfig   = "weft-injector"
	leaseName       = meshv1alpha1.LeaderElectionID
	controllerUser  = "system:serviceaccount:" + systemNamespace + ":weft-controller"
	fieldOwner      = "weft-install-test"
)

// TestInstall renders config/default exactly as `make build-installer` does
// (less the image override) and installs it into a real API server, then
// checks what a cluster administrator relies on: the control plane is
// hardened and highly available, the pieces point at each other, the
// injection webhook intercepts only pods that asked for the mesh, and the
// controller's RBAC is what it needs and no more.
func TestInstall(t *testing.T) {
	objs := render(t)

	// The install carries Weft's CRDs itself, so the API server starts
	// without them; cert-manager's and Gateway API's are prerequisites.
	env := testenv.Start(t, func(e *envtest.Environment) {
		own := filepath.Join(testenv.RepoRoot(), "config", "crd", "bases")
		e.CRDDirectoryPaths = slices.DeleteFunc(slices.Clone(e.CRDDirectoryPaths), func(p string) bool { return p == own })
	})
	c := env.Client
	ctx := t.Context()

	// cert-manager's own install creates its namespace; the mesh root CA
	// Certificate goes there.
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "cert-manager"}}); err != nil {
		t.Fatalf("creating the cert-manager namespace: %v", err)
	}
	install(t, c, objs)

	t.Run("controller deployment", func(t *testing.T) { checkDeployment(t, c) })
	t.Run("certificates mounted where the flags point", func(t *testing.T) { checkCertificateMounts(t, c) })
	t.Run("xds service", func(t *testing.T) { checkXDSService(t, c) })
	t.Run("pod disruption budget", func(t *testing.T) { checkPDB(t, c) })
	t.Run("webhook configuration", func(t *testing.T) { checkWebhookConfig(t, c) })
	t.Run("webhook intercepts only pods that asked for the mesh", func(t *testing.T) { checkWebhookScope(t, c) })
	t.Run("rbac has no wildcards", func(t *testing.T) { checkNoWildcards(t, c, objs) })
	t.Run("rbac grants what the controller needs and no more", func(t *testing.T) { checkControllerAccess(t, c) })
	t.Run("metrics reader", func(t *testing.T) { checkMetricsReader(t, c) })
	t.Run("re-applying the install changes nothing, caBundle included", func(t *testing.T) { checkReapply(t, c, objs) })
}

// render runs kustomize on config/default.
func render(t *testing.T) []*unstructured.Unstructured {
	t.Helper()
	kustomize := kustomizeBinary(t)
	cmd := exec.CommandContext(t.Context(), kustomize, "build", filepath.Join(testenv.RepoRoot(), "config", "default"))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("kustomize build config/default: %v\n%s", err, stderr.String())
	}
	objs, err := manifest.Decode(&stdout)
	if err != nil {
		t.Fatalf("decoding the kustomize output: %v", err)
	}
	if len(objs) == 0 {
		t.Fatal("kustomize build config/default rendered no objects")
	}
	return objs
}

// kustomizeBinary returns bin/kustomize, building it from hack/tools (as the
// Makefile does) on a fresh clone.
func kustomizeBinary(t *testing.T) string {
	t.Helper()
	root := testenv.RepoRoot()
	bin := filepath.Join(root, "bin", "kustomize")
	if _, err := os.Stat(bin); err == nil {
		return bin
	}
	if err := os.MkdirAll(filepath.Dir(bin), 0o750); err != nil {
		t.Fatal(err)
	}
	// Build beside the target and rename, so concurrent test binaries never
	// run a half-written file.
	tmp := fmt.Sprintf("%s.%d.tmp", bin, os.Getpid())
	cmd := exec.CommandContext(t.Context(), "go", "build", "-o", tmp, "sigs.k8s.io/kustomize/kustomize/v5")
	cmd.Dir = filepath.Join(root, "hack", "tools")
	cmd.Env = append(os.Environ(), "GOTOOLCHAIN=local", "GOFLAGS=-buildvcs=false")
	if out, err := cmd.CombinedOutput(); err != nil {
		_ = os.Remove(tmp)
		t.Fatalf("bin/kustomize is missing and building it from hack/tools failed (try `make %s`): %v\n%s", bin, err, out)
	}
	if err := os.Rename(tmp, bin); err != nil {
		t.Fatal(err)
	}
	return bin
}

// install applies the objects with server-side apply the way `kubectl apply
// --server-side` does: namespaces and CRDs first, then, once the CRDs are
// served, everything else.
func install(t *testing.T, c client.Client, objs []*unstructured.Unstructured) {
	t.Helper()
	first := func(u *unstructured.Unstructured) bool {
		return u.GetKind() == "Namespace" || u.GetKind() == "CustomResourceDefinition"
	}
	apply := func(u *unstructured.Unstructured) {
		if err := c.Apply(t.Context(), client.ApplyConfigurationFromUnstructured(u.DeepCopy()), client.FieldOwner(fieldOwner)); err != nil {
			t.Errorf("applying %s %s: %v", u.GetKind(), key(u), err)
		}
	}
	var crds []string
	for _, u := range objs {
		if first(u) {
			apply(u)
			if u.GetKind() == "CustomResourceDefinition" {
				crds = append(crds, u.GetName())
			}
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	for _, name := range crds {
		awaitEstablished(t, c, name)
	}
	for _, u := range objs {
		if !first(u) {
			apply(u)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
}

func key(u *unstructured.Unstructured) string {
	if u.GetNamespace() == "" {
		return u.GetName()
	}
	return u.GetNamespace() + "/" + u.GetName()
}

func awaitEstablished(t *testing.T, c client.Client, name string) {
	t.Helper()
	err := wait.PollUntilContextTimeout(t.Context(), 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		crd := &unstructured.Unstructured{}
		crd.SetAPIVersion("apiextensions.k8s.io/v1")
		crd.SetKind("CustomResourceDefinition")
		if err := c.Get(ctx, types.NamespacedName{Name: name}, crd); err != nil {
			return false, err
		}
		conds, _, _ := unstructured.NestedSlice(crd.Object, "status", "conditions")
		return slices.ContainsFunc(conds, func(c any) bool {
			m, _ := c.(map[string]any)
			return m["type"] == "Established" && m["status"] == "True"
		}), nil
	})
	if err != nil {
		t.Fatalf("CRD %s never became established: %v", name, err)
	}
}

func getDeployment(t *testing.T, c client.Client) (*appsv1.Deployment, *corev1.Container) {
	t.Helper()
	d := &appsv1.Deployment{}
	if err := c.Get(t.Context(), types.NamespacedName{Namespace: systemNamespace, Name: deploymentName}, d); err != nil {
		t.Fatalf("the controller Deployment: %v", err)
	}
	i := slices.IndexFunc(d.Spec.Template.Spec.Containers, func(c corev1.Container) bool { return c.Name == "manager" })
	if i < 0 {
		t.Fatalf("Deployment %s has no container named manager", deploymentName)
	}
	return d, &d.Spec.Template.Spec.Containers[i]
}

// flag returns the value of --name=value in args.
func flag(args []string, name string) (string, bool) {
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			return v, true
		}
	}
	return "", false
}

func containerPort(t *testing.T, ctr *corev1.Container, name string) int32 {
	t.Helper()
	for _, p := range ctr.Ports {
		if p.Name == name {
			return p.ContainerPort
		}
	}
	t.Fatalf("container %s has no port named %q", ctr.Name, name)
	return 0
}

func checkDeployment(t *testing.T, c client.Client) {
	d, ctr := getDeployment(t, c)
	pod := d.Spec.Template.Spec

	if got := ptr.Deref(d.Spec.Replicas, 1); got != 2 {
		t.Errorf("replicas = %d, want 2", got)
	}
	if !slices.Contains(ctr.Args, "--leader-elect") {
		t.Errorf("args %v lack --leader-elect: with two replicas both would write status", ctr.Args)
	}
	if pod.Affinity == nil || pod.Affinity.PodAntiAffinity == nil || len(pod.Affinity.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution) == 0 {
		t.Error("no preferred pod anti-affinity: both replicas may land on one node")
	}
	if got := ptr.Deref(pod.TerminationGracePeriodSeconds, 0); got != 30 {
		t.Errorf("terminationGracePeriodSeconds = %d, want 30", got)
	}
	sa := &corev1.ServiceAccount{}
	if err := c.Get(t.Context(), types.NamespacedName{Namespace: systemNamespace, Name: pod.ServiceAccountName}, sa); err != nil {
		t.Errorf("service account %q of the Deployment: %v", pod.ServiceAccountName, err)
	}

	// Pod- or container-level settings count, as they do for the kubelet.
	psc, csc := ptr.Deref(pod.SecurityContext, corev1.PodSecurityContext{}), ptr.Deref(ctr.SecurityContext, corev1.SecurityContext{})
	if !ptr.Deref(csc.RunAsNonRoot, ptr.Deref(psc.RunAsNonRoot, false)) {
		t.Error("the controller may run as root: set runAsNonRoot")
	}
	if !ptr.Deref(csc.ReadOnlyRootFilesystem, false) {
		t.Error("the root filesystem is writable: set readOnlyRootFilesystem")
	}
	if ptr.Deref(csc.AllowPrivilegeEscalation, true) {
		t.Error("allowPrivilegeEscalation is not false")
	}
	if csc.Capabilities == nil || !slices.Contains(csc.Capabilities.Drop, "ALL") || len(csc.Capabilities.Add) > 0 {
		t.Errorf("capabilities = %+v, want drop ALL and add none", csc.Capabilities)
	}
	seccomp := csc.SeccompProfile
	if seccomp == nil {
		seccomp = psc.SeccompProfile
	}
	if seccomp == nil || seccomp.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("seccompProfile = %+v, want RuntimeDefault", seccomp)
	}

	res := ctr.Resources
	for _, q := range []struct {
		what      string
		got, want string
	}{
		{"cpu request", res.Requests.Cpu().String(), "100m"},
		{"memory request", res.Requests.Memory().String(), "128Mi"},
		{"memory limit", res.Limits.Memory().String(), "512Mi"},
	} {
		if q.got != q.want {
			t.Errorf("%s = %s, want %s", q.what, q.got, q.want)
		}
	}

	// Every listener the flags open is a declared container port.
	for flagName, portName := range map[string]string{
		"xds-bind-address":          "xds",
		"metrics-bind-address":      "metrics",
		"health-probe-bind-address": "health",
	} {
		addr, ok := flag(ctr.Args, flagName)
		if !ok {
			t.Errorf("args lack --%s", flagName)
			continue
		}
		if want := ":" + strconv.Itoa(int(containerPort(t, ctr, portName))); addr != want {
			t.Errorf("--%s=%s but the %s container port is %s", flagName, addr, portName, want)
		}
	}
	if v, _ := flag(ctr.Args, "webhook-port"); v != strconv.Itoa(int(containerPort(t, ctr, "webhook"))) {
		t.Errorf("--webhook-port=%s does not match the webhook container port", v)
	}
	for _, p := range []struct {
		name  string
		probe *corev1.Probe
		path  string
	}{{"liveness", ctr.LivenessProbe, "/healthz"}, {"readiness", ctr.ReadinessProbe, "/readyz"}} {
		if p.probe == nil || p.probe.HTTPGet == nil {
			t.Errorf("no HTTP %s probe", p.name)
			continue
		}
		if p.probe.HTTPGet.Path != p.path || p.probe.HTTPGet.Port.String() != "health" {
			t.Errorf("%s probe GET %s on port %s, want %s on the health port (8081)", p.name, p.probe.HTTPGet.Path, p.probe.HTTPGet.Port.String(), p.path)
		}
	}
	if got := containerPort(t, ctr, "health"); got != 8081 {
		t.Errorf("health port = %d, want 8081", got)
	}

	// weft-system enforces the restricted Pod Security profile; a pod made
	// from the template must pass it, or the ReplicaSet could create none.
	probe := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "controller-template", Namespace: systemNamespace, Labels: d.Spec.Template.Labels},
		Spec:       *d.Spec.Template.Spec.DeepCopy(),
	}
	if err := c.Create(t.Context(), probe, client.DryRunAll); err != nil {
		t.Errorf("a controller pod is not admitted in %s: %v", systemNamespace, err)
	}
}

// checkCertificateMounts follows each certificate directory flag to its
// volume, its Secret, and the cert-manager Certificate that writes it.
func checkCertificateMounts(t *testing.T, c client.Client) {
	d, ctr := getDeployment(t, c)
	certs := &cmapi.CertificateList{}
	if err := c.List(t.Context(), certs, client.InNamespace(systemNamespace)); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"xds-cert-dir", "webhook-cert-dir"} {
		dir, ok := flag(ctr.Args, f)
		if !ok {
			t.Errorf("args lack --%s", f)
			continue
		}
		secret := mountedSecret(d, ctr, dir)
		if secret == "" {
			t.Errorf("--%s=%s is not a Secret volume mount", f, dir)
			continue
		}
		if !slices.ContainsFunc(certs.Items, func(cert cmapi.Certificate) bool { return cert.Spec.SecretName == secret }) {
			t.Errorf("--%s mounts Secret %s, which no Certificate in %s writes", f, secret, systemNamespace)
		}
	}
}

func mountedSecret(d *appsv1.Deployment, ctr *corev1.Container, dir string) string {
	i := slices.IndexFunc(ctr.VolumeMounts, func(m corev1.VolumeMount) bool { return m.MountPath == dir })
	if i < 0 {
		return ""
	}
	for _, v := range d.Spec.Template.Spec.Volumes {
		if v.Name == ctr.VolumeMounts[i].Name && v.Secret != nil {
			return v.Secret.SecretName
		}
	}
	return ""
}

// certificateForMount is the Certificate whose Secret the controller mounts
// at the directory named by flagName.
func certificateForMount(t *testing.T, c client.Client, flagName string) *cmapi.Certificate {
	t.Helper()
	d, ctr := getDeployment(t, c)
	dir, _ := flag(ctr.Args, flagName)
	secret := mountedSecret(d, ctr, dir)
	certs := &cmapi.CertificateList{}
	if err := c.List(t.Context(), certs, client.InNamespace(systemNamespace)); err != nil {
		t.Fatal(err)
	}
	for i := range certs.Items {
		if certs.Items[i].Spec.SecretName == secret {
			return &certs.Items[i]
		}
	}
	t.Fatalf("no Certificate writes Secret %q mounted at --%s", secret, flagName)
	return nil
}

// servicePort resolves a Service port to the controller's container port.
func servicePort(t *testing.T, c client.Client, name string, port int32) (corev1.ServicePort, int32) {
	t.Helper()
	svc := &corev1.Service{}
	if err := c.Get(t.Context(), types.NamespacedName{Namespace: systemNamespace, Name: name}, svc); err != nil {
		t.Fatalf("Service %s: %v", name, err)
	}
	d, ctr := getDeployment(t, c)
	if !labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(d.Spec.Template.Labels)) || len(svc.Spec.Selector) == 0 {
		t.Errorf("Service %s selector %v does not select the controller pods %v", name, svc.Spec.Selector, d.Spec.Template.Labels)
	}
	i := slices.IndexFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return p.Port == port })
	if i < 0 {
		t.Fatalf("Service %s has no port %d", name, port)
	}
	sp := svc.Spec.Ports[i]
	if sp.TargetPort.StrVal != "" {
		return sp, containerPort(t, ctr, sp.TargetPort.StrVal)
	}
	return sp, sp.TargetPort.IntVal
}

func checkXDSService(t *testing.T, c client.Client) {
	sp, target := servicePort(t, c, xdsService, 15010)
	if target != 15010 {
		t.Errorf("%s:15010 leads to container port %d, want 15010", xdsService, target)
	}
	if ptr.Deref(sp.AppProtocol, "") != "grpc" {
		t.Errorf("%s appProtocol = %q, want grpc", xdsService, ptr.Deref(sp.AppProtocol, ""))
	}
	// Injected proxies dial --xds-address and check the server certificate
	// against that name.
	_, ctr := getDeployment(t, c)
	host := xdsService + "." + systemNamespace + ".svc"
	if got, _ := flag(ctr.Args, "xds-address"); got != host+":15010" {
		t.Errorf("--xds-address=%s, want %s:15010", got, host)
	}
	if cert := certificateForMount(t, c, "xds-cert-dir"); !slices.Contains(cert.Spec.DNSNames, host) {
		t.Errorf("xDS Certificate %s has DNS names %v, not %s", cert.Name, cert.Spec.DNSNames, host)
	}
}

func checkPDB(t *testing.T, c client.Client) {
	d, _ := getDeployment(t, c)
	pdbs := &policyv1.PodDisruptionBudgetList{}
	if err := c.List(t.Context(), pdbs, client.InNamespace(systemNamespace)); err != nil {
		t.Fatal(err)
	}
	for _, pdb := range pdbs.Items {
		sel, err := metav1.LabelSelectorAsSelector(pdb.Spec.Selector)
		if err != nil || !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
			continue
		}
		if pdb.Spec.MinAvailable == nil || pdb.Spec.MinAvailable.String() != "1" {
			t.Errorf("PodDisruptionBudget %s minAvailable = %v, want 1", pdb.Name, pdb.Spec.MinAvailable)
		}
		return
	}
	t.Errorf("no PodDisruptionBudget in %s covers the controller pods", systemNamespace)
}

func getWebhookConfig(t *testing.T, c client.Client) *admissionregistrationv1.MutatingWebhookConfiguration {
	t.Helper()
	mwc := &admissionregistrationv1.MutatingWebhookConfiguration{}
	if err := c.Get(t.Context(), types.NamespacedName{Name: webhookConfig}, mwc); err != nil {
		t.Fatalf("MutatingWebhookConfiguration %s: %v", webhookConfig, err)
	}
	if len(mwc.Webhooks) == 0 {
		t.Fatalf("MutatingWebhookConfiguration %s has no webhooks", webhookConfig)
	}
	return mwc
}

func checkWebhookConfig(t *testing.T, c client.Client) {
	mwc := getWebhookConfig(t, c)
	_, ctr := getDeployment(t, c)
	cert := certificateForMount(t, c, "webhook-cert-dir")
	if got, want := mwc.Annotations["cert-manager.io/inject-ca-from"], cert.Namespace+"/"+cert.Name; got != want {
		t.Errorf("cert-manager.io/inject-ca-from = %q, want %q (the Certificate the webhook serves with)", got, want)
	}
	for _, w := range mwc.Webhooks {
		if ptr.Deref(w.FailurePolicy, "") != admissionregistrationv1.Fail {
			t.Errorf("%s: failurePolicy = %v, want Fail", w.Name, ptr.Deref(w.FailurePolicy, ""))
		}
		if got := ptr.Deref(w.TimeoutSeconds, 0); got != 5 {
			t.Errorf("%s: timeoutSeconds = %d, want 5", w.Name, got)
		}
		if ptr.Deref(w.SideEffects, "") != admissionregistrationv1.SideEffectClassNone {
			t.Errorf("%s: sideEffects = %v, want None", w.Name, ptr.Deref(w.SideEffects, ""))
		}
		if ptr.Deref(w.ReinvocationPolicy, "") != admissionregistrationv1.NeverReinvocationPolicy {
			t.Errorf("%s: reinvocationPolicy = %v, want Never", w.Name, ptr.Deref(w.ReinvocationPolicy, ""))
		}
		sel, err := metav1.LabelSelectorAsSelector(w.NamespaceSelector)
		if err != nil {
			t.Errorf("%s: namespaceSelector: %v", w.Name, err)
			continue
		}
		// Excluded by name, whatever labels they carry.
		for _, ns := range []string{"kube-system", systemNamespace} {
			if !slices.ContainsFunc(w.NamespaceSelector.MatchExpressions, func(r metav1.LabelSelectorRequirement) bool {
				return r.Key == corev1.LabelMetadataName && r.Operator == metav1.LabelSelectorOpNotIn && slices.Contains(r.Values, ns)
			}) {
				t.Errorf("%s: namespaceSelector does not exclude %s by %s NotIn", w.Name, ns, corev1.LabelMetadataName)
			}
			for _, inject := range []string{"", meshv1alpha1.NamespaceInjectEnabled} {
				set := labels.Set{corev1.LabelMetadataName: ns}
				if inject != "" {
					set[meshv1alpha1.LabelInject] = inject
				}
				if sel.Matches(set) {
					t.Errorf("%s: namespaceSelector matches %s with labels %v", w.Name, ns, set)
				}
			}
		}
		svc := w.ClientConfig.Service
		if svc == nil || svc.Namespace != systemNamespace {
			t.Errorf("%s: clientConfig.service = %+v, want a Service in %s", w.Name, svc, systemNamespace)
			continue
		}
		_, target := servicePort(t, c, svc.Name, ptr.Deref(svc.Port, 443))
		if want, _ := flag(ctr.Args, "webhook-port"); strconv.Itoa(int(target)) != want {
			t.Errorf("%s: Service %s port %d leads to container port %d, but the webhook listens on %s", w.Name, svc.Name, ptr.Deref(svc.Port, 443), target, want)
		}
		if host := svc.Name + "." + svc.Namespace + ".svc"; !slices.Contains(cert.Spec.DNSNames, host) {
			t.Errorf("%s: the API server calls %s, which is not among the webhook Certificate's DNS names %v", w.Name, host, cert.Spec.DNSNames)
		}
	}
	// A pod must never be patched twice: no namespace may be selected by
	// more than one entry.
	for _, set := range []labels.Set{
		{corev1.LabelMetadataName: "shop", meshv1alpha1.LabelInject: meshv1alpha1.NamespaceInjectEnabled},
		{corev1.LabelMetadataName: "shop", meshv1alpha1.LabelInject: "disabled"},
		{corev1.LabelMetadataName: "shop"},
	} {
		n := 0
		for _, w := range mwc.Webhooks {
			if sel, err := metav1.LabelSelectorAsSelector(w.NamespaceSelector); err == nil && sel.Matches(set) {
				n++
			}
		}
		if n > 1 {
			t.Errorf("%d webhook entries select a namespace labelled %v", n, set)
		}
	}
}

// checkWebhookScope creates pods (dry run) and lets the API server decide
// whether to call the injector. No injector runs in the test, so a call shows
// up as the pod being refused with the entry's name; a pod the webhook does
// not match is admitted.
func checkWebhookScope(t *testing.T, c client.Client) {
	ctx := t.Context()
	for _, ns := range []string{"mesh-on", "mesh-off"} {
		obj := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}
		if ns == "mesh-on" {
			obj.Labels = map[string]string{meshv1alpha1.LabelInject: meshv1alpha1.NamespaceInjectEnabled}
		}
		if err := c.Create(ctx, obj); err != nil {
			t.Fatal(err)
		}
	}
	// The exclusions must win over the label.
	for _, ns := range []string{"kube-system", systemNamespace} {
		patch := fmt.Appendf(nil, `{"metadata":{"labels":{%q:%q}}}`, meshv1alpha1.LabelInject, meshv1alpha1.NamespaceInjectEnabled)
		if err := c.Patch(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, client.RawPatch(types.MergePatchType, patch)); err != nil {
			t.Fatal(err)
		}
	}

	mwc := getWebhookConfig(t, c)
	svc := mwc.Webhooks[0].ClientConfig.Service
	host := svc.Name + "." + svc.Namespace + ".svc"
	admit := func(ctx context.Context, ns string, annotations map[string]string, hostNetwork ...bool) error {
		pod := restrictedPod(ns, annotations)
		pod.Spec.HostNetwork = len(hostNetwork) > 0 && hostNetwork[0]
		return c.Create(ctx, pod, client.DryRunAll)
	}
	calledBy := func(err error) string {
		if err == nil {
			return ""
		}
		for _, w := range mwc.Webhooks {
			if strings.Contains(err.Error(), fmt.Sprintf("failed calling webhook %q", w.Name)) {
				return w.Name
			}
		}
		return "unexpected error: " + err.Error()
	}

	// The API server picks up webhook configurations asynchronously; wait
	// until a pod in a labelled namespace reaches the injector.
	var last error
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 60*time.Second, true, func(ctx context.Context) (bool, error) {
		last = admit(ctx, "mesh-on", nil)
		return last != nil, nil
	})
	if err != nil {
		t.Fatalf("a pod in a namespace labelled weft.dev/inject=enabled never reached the injector (with failurePolicy Fail, an unreachable injector refuses the pod): %v", err)
	}
	if !strings.Contains(last.Error(), host) {
		t.Errorf("the API server did not call the injector through %s: %v", host, last)
	}

	for _, tc := range []struct {
		name        string
		namespace   string
		annotations map[string]string
		want        string // the webhook entry called, or "" for none
		hostNetwork bool
	}{
		{"labelled namespace", "mesh-on", nil, "namespace.inject.weft.dev", false},
		{"labelled namespace, pod opted out", "mesh-on", map[string]string{meshv1alpha1.AnnotationInject: meshv1alpha1.InjectFalse}, "", false},
		{"unlabelled namespace", "mesh-off", nil, "", false},
		{"unlabelled namespace, pod opted in", "mesh-off", map[string]string{meshv1alpha1.AnnotationInject: meshv1alpha1.InjectTrue}, "pod.inject.weft.dev", false},
		{"unlabelled namespace, proxyless gRPC pod", "mesh-off", map[string]string{meshv1alpha1.AnnotationInject: meshv1alpha1.InjectGRPCAgent}, "pod.inject.weft.dev", false},
		{"kube-system, labelled and opted in", "kube-system", map[string]string{meshv1alpha1.AnnotationInject: meshv1alpha1.InjectTrue}, "", false},
		{"weft-system, labelled and opted in", systemNamespace, map[string]string{meshv1alpha1.AnnotationInject: meshv1alpha1.InjectTrue}, "", false},
		{"labelled namespace, hostNetwork pod", "mesh-on", nil, "", true},
		{"unlabelled namespace, hostNetwork pod opted in", "mesh-off", map[string]string{meshv1alpha1.AnnotationInject: meshv1alpha1.InjectTrue}, "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := calledBy(admit(t.Context(), tc.namespace, tc.annotations, tc.hostNetwork)); got != tc.want {
				t.Errorf("webhook called: %q, want %q", got, tc.want)
			}
		})
	}
}

// restrictedPod passes the restricted Pod Security profile that
// weft-system enforces, so only the webhook can refuse it.
func restrictedPod(ns string, annotations map[string]string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "app", Namespace: ns, Annotations: annotations},
		Spec: corev1.PodSpec{
			SecurityContext: &corev1.PodSecurityContext{
				RunAsNonRoot:   ptr.To(true),
				SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
			},
			Containers: []corev1.Container{{
				Name:  "app",
				Image: "registry.example/app:1",
				SecurityContext: &corev1.SecurityContext{
					AllowPrivilegeEscalation: ptr.To(false),
					Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
				},
			}},
		},
	}
}

func checkNoWildcards(t *testing.T, c client.Client, objs []*unstructured.Unstructured) {
	n := 0
	for _, u := range objs {
		var rules []rbacv1.PolicyRule
		switch u.GetKind() {
		case "ClusterRole":
			r := &rbacv1.ClusterRole{}
			if err := c.Get(t.Context(), types.NamespacedName{Name: u.GetName()}, r); err != nil {
				t.Fatal(err)
			}
			if r.AggregationRule != nil {
				t.Errorf("ClusterRole %s aggregates other roles; its rules cannot be reviewed here", r.Name)
			}
			rules = r.Rules
		case "Role":
			r := &rbacv1.Role{}
			if err := c.Get(t.Context(), types.NamespacedName{Namespace: u.GetNamespace(), Name: u.GetName()}, r); err != nil {
				t.Fatal(err)
			}
			rules = r.Rules
		default:
			continue
		}
		n++
		for i, rule := range rules {
			for field, values := range map[string][]string{
				"verbs": rule.Verbs, "apiGroups": rule.APIGroups, "resources": rule.Resources, "nonResourceURLs": rule.NonResourceURLs,
			} {
				if slices.ContainsFunc(values, func(v string) bool { return strings.Contains(v, "*") }) {
					t.Errorf("%s %s rule %d grants %s %v", u.GetKind(), key(u), i, field, values)
				}
			}
		}
	}
	if n == 0 {
		t.Error("the install has no Roles or ClusterRoles")
	}
}

type access struct {
	verb, group, resource, namespace, name string
}

func (a access) String() string {
	return fmt.Sprintf("%s %s.%s %q in %q", a.verb, a.resource, a.group, a.name, a.namespace)
}

// allowed asks the API server's RBAC authorizer.
func allowed(ctx context.Context, c client.Client, user string, groups []string, a access) (bool, error) {
	sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
		User:   user,
		Groups: groups,
		ResourceAttributes: &authorizationv1.ResourceAttributes{
			Verb: a.verb, Group: a.group, Resource: a.resource, Namespace: a.namespace, Name: a.name,
		},
	}}
	if a.resource == "" {
		sar.Spec.ResourceAttributes = nil
		sar.Spec.NonResourceAttributes = &authorizationv1.NonResourceAttributes{Verb: a.verb, Path: a.name}
	}
	if err := c.Create(ctx, sar); err != nil {
		return false, err
	}
	return sar.Status.Allowed, nil
}

// awaitAllowed waits for the authorizer's view of the new bindings.
func awaitAllowed(t *testing.T, c client.Client, user string, groups []string, a access) {
	t.Helper()
	err := wait.PollUntilContextTimeout(t.Context(), 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		return allowed(ctx, c, user, groups, a)
	})
	if err != nil {
		t.Errorf("%s may not %s: %v", user, a, err)
	}
}

func checkControllerAccess(t *testing.T, c client.Client) {
	groups := []string{"system:serviceaccounts", "system:serviceaccounts:" + systemNamespace, "system:authenticated"}
	for _, a := range []access{
		// Leader election.
		{"create", "coordination.k8s.io", "leases", systemNamespace, ""},
		{"get", "coordination.k8s.io", "leases", systemNamespace, leaseName},
		{"update", "coordination.k8s.io", "leases", systemNamespace, leaseName},
		{"create", "", "events", systemNamespace, ""},
		{"create", "events.k8s.io", "events", systemNamespace, ""},
		// The metrics endpoint's authentication and authorization.
		{"create", "authentication.k8s.io", "tokenreviews", "", ""},
		{"create", "authorization.k8s.io", "subjectaccessreviews", "", ""},
		// The generated ClusterRole is bound.
		{"watch", "", "pods", "", ""},
		{"list", "discovery.k8s.io", "endpointslices", "", ""},
		{"watch", "mesh.weft.dev", "trafficsplits", "", ""},
	} {
		awaitAllowed(t, c, controllerUser, groups, a)
	}
	for _, a := range []access{
		{"get", "coordination.k8s.io", "leases", systemNamespace, "someone-else"},
		{"update", "coordination.k8s.io", "leases", systemNamespace, "someone-else"},
		{"delete", "coordination.k8s.io", "leases", systemNamespace, leaseName},
		{"create", "coordination.k8s.io", "leases", "kube-system", ""},
		{"create", "", "pods", "default", ""},
		{"update", "admissionregistration.k8s.io", "mutatingwebhookconfigurations", "", webhookConfig},
		{"create", "rbac.authorization.k8s.io", "clusterrolebindings", "", ""},
		{"get", "", "", "", "/metrics"},
	} {
		ok, err := allowed(t.Context(), c, controllerUser, groups, a)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			t.Errorf("%s may %s", controllerUser, a)
		}
	}
}

// checkMetricsReader binds the reader role as a user would for Prometheus.
func checkMetricsReader(t *testing.T, c client.Client) {
	const scraper = "system:serviceaccount:monitoring:prometheus"
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "prometheus-weft-metrics"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "weft-metrics-reader"},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: scraper}},
	}
	if err := c.Create(t.Context(), binding); err != nil {
		t.Fatal(err)
	}
	awaitAllowed(t, c, scraper, nil, access{verb: "get", name: "/metrics"})
	for _, a := range []access{
		{verb: "get", name: "/debug/config"},
		{"list", "", "secrets", systemNamespace, ""},
	} {
		if ok, err := allowed(t.Context(), c, scraper, nil, a); err != nil || ok {
			t.Errorf("the metrics reader may %s (err %v)", a, err)
		}
	}
}

// checkReapply is what a GitOps tool does on every sync: cert-manager's
// cainjector has written the webhook's caBundle (it is in no manifest),
// and the whole install is applied again. Nothing changes: the caBundle
// stays, and no object gets a new version.
func checkReapply(t *testing.T, c client.Client, objs []*unstructured.Unstructured) {
	ctx := t.Context()
	var wh admissionregistrationv1.MutatingWebhookConfiguration
	if err := c.Get(ctx, client.ObjectKey{Name: webhookConfig}, &wh); err != nil {
		t.Fatal(err)
	}
	bundle := []byte("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
	for i := range wh.Webhooks {
		wh.Webhooks[i].ClientConfig.CABundle = bundle
	}
	if err := c.Update(ctx, &wh, client.FieldOwner("cainjector")); err != nil {
		t.Fatal(err)
	}
	versions := map[string]string{}
	get := func(u *unstructured.Unstructured) *unstructured.Unstructured {
		live := &unstructured.Unstructured{}
		live.SetGroupVersionKind(u.GroupVersionKind())
		if err := c.Get(ctx, client.ObjectKeyFromObject(u), live); err != nil {
			t.Fatalf("%s %s: %v", u.GetKind(), key(u), err)
		}
		return live
	}
	for _, u := range objs {
		versions[u.GetKind()+" "+key(u)] = get(u).GetResourceVersion()
	}
	for _, u := range objs {
		if err := c.Apply(ctx, client.ApplyConfigurationFromUnstructured(u.DeepCopy()), client.FieldOwner(fieldOwner)); err != nil {
			t.Errorf("re-applying %s %s: %v", u.GetKind(), key(u), err)
		}
	}
	for _, u := range objs {
		if v := get(u).GetResourceVersion(); v != versions[u.GetKind()+" "+key(u)] {
			t.Errorf("re-applying %s %s wrote a new version", u.GetKind(), key(u))
		}
	}
	if err := c.Get(ctx, client.ObjectKey{Name: webhookConfig}, &wh); err != nil {
		t.Fatal(err)
	}
	for _, w := range wh.Webhooks {
		if !bytes.Equal(w.ClientConfig.CABundle, bundle) {
			t.Errorf("re-applying the install removed webhook %s's caBundle", w.Name)
		}
	}
}
