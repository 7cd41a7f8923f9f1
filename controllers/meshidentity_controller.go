package controllers

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	meshv1alpha1 "github.com/weft-mesh/weft/api/v1alpha1"
	"github.com/weft-mesh/weft/internal/identity"
	"github.com/weft-mesh/weft/internal/workload"
)

// +kubebuilder:rbac:groups=mesh.weft.dev,resources=meshidentities,verbs=get;list;watch
// +kubebuilder:rbac:groups=mesh.weft.dev,resources=meshidentities/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=mesh.weft.dev,resources=meshidentities/finalizers,verbs=update
// +kubebuilder:rbac:groups="",resources=pods;namespaces,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=configmaps,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=cert-manager.io,resources=certificates,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=cert-manager.io,resources=certificaterequests;issuers;clusterissuers,verbs=get;list;watch

// MeshIdentityReconciler gives every service account that a running pod uses
// in the namespaces a MeshIdentity selects a cert-manager Certificate with
// its SPIFFE ID, publishes the trust bundle (weft-trust-bundle) to those
// namespaces, and reports on the MeshIdentity whether the identities are
// issued.
type MeshIdentityReconciler struct {
	// Client reads from the manager's cache and writes to the API server.
	Client client.Client
	// Scheme knows Weft's and cert-manager's kinds.
	Scheme *runtime.Scheme
	// Clock is the time expiry is judged by; nil means the real clock.
	Clock clock.PassiveClock

	// managed reads the Secrets and ConfigMaps labelled
	// app.kubernetes.io/managed-by=weft from a cache that holds only those,
	// so the controller does not keep every Secret of the cluster in memory.
	managed client.Reader
}

const (
	meshIdentityControllerName = "meshidentity"

	// identityDeletionRetry is how long to wait for a Certificate or ConfigMap that
	// another MeshIdentity is deleting before creating ours in its place:
	// its deletion is reported to that MeshIdentity, not to this one.
	identityDeletionRetry = 5 * time.Second
	// identityMinRequeue keeps time-driven requeues from spinning when a deadline is
	// now or just past.
	identityMinRequeue = time.Second
	// identityMaxNamed is how many Certificates a condition message names before it
	// says "and N more".
	identityMaxNamed = 3
)

// SetupWithManager registers the reconciler and its watches, and a cache of
// Weft-labelled Secrets and ConfigMaps. It fails when cert-manager's CRDs are
// not installed.
func (r *MeshIdentityReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.Client == nil {
		r.Client = mgr.GetClient()
	}
	if r.Scheme == nil {
		r.Scheme = mgr.GetScheme()
	}
	if _, err := mgr.GetRESTMapper().RESTMapping(cmapi.SchemeGroupVersion.WithKind(cmapi.CertificateKind).GroupKind(), cmapi.SchemeGroupVersion.Version); err != nil {
		return fmt.Errorf("meshidentity controller needs cert-manager's CRDs: %w", err)
	}

	managed, err := cache.New(mgr.GetConfig(), cache.Options{
		HTTPClient:           mgr.GetHTTPClient(),
		Scheme:               mgr.GetScheme(),
		Mapper:               mgr.GetRESTMapper(),
		DefaultLabelSelector: identity.ManagedSelector(),
		DefaultTransform:     cache.TransformStripManagedFields(),
	})
	if err != nil {
		return fmt.Errorf("creating the cache of weft secrets and configmaps: %w", err)
	}
	if err := mgr.Add(managed); err != nil {
		return fmt.Errorf("adding the cache of weft secrets and configmaps: %w", err)
	}
	r.managed = managed

	allOnChange := builder.WithPredicates(predicate.Funcs{
		CreateFunc: func(event.CreateEvent) bool { return true },
		DeleteFunc: func(event.DeleteEvent) bool { return true },
		UpdateFunc: func(e event.UpdateEvent) bool {
			return e.ObjectOld.GetGeneration() != e.ObjectNew.GetGeneration() ||
				!maps.Equal(e.ObjectOld.GetLabels(), e.ObjectNew.GetLabels()) ||
				(e.ObjectOld.GetDeletionTimestamp() == nil) != (e.ObjectNew.GetDeletionTimestamp() == nil)
		},
		GenericFunc: func(event.GenericEvent) bool { return false },
	})
	existence := builder.WithPredicates(predicate.Funcs{
		UpdateFunc:  func(event.UpdateEvent) bool { return false },
		GenericFunc: func(event.GenericEvent) bool { return false },
	})
	byLabel := handler.EnqueueRequestsFromMapFunc(r.meshIdentitiesByLabel)

	return ctrl.NewControllerManagedBy(mgr).
		Named(meshIdentityControllerName).
		For(&meshv1alpha1.MeshIdentity{}).
		Owns(&cmapi.Certificate{}).
		// Another MeshIdentity appearing, going or changing its selector
		// can move a namespace between MeshIdentities.
		Watches(&meshv1alpha1.MeshIdentity{}, handler.EnqueueRequestsFromMapFunc(r.allMeshIdentities), allOnChange).
		Watches(&corev1.Namespace{}, handler.EnqueueRequestsFromMapFunc(r.allMeshIdentities), allOnChange).
		Watches(&corev1.Pod{}, handler.EnqueueRequestsFromMapFunc(r.meshIdentitiesForPod), builder.WithPredicates(podIdentityChanged())).
		Watches(&cmapi.CertificateRequest{}, handler.EnqueueRequestsFromMapFunc(r.meshIdentityForRequest)).
		Watches(&cmapi.Issuer{}, handler.EnqueueRequestsFromMapFunc(r.allMeshIdentities), existence).
		Watches(&cmapi.ClusterIssuer{}, handler.EnqueueRequestsFromMapFunc(r.allMeshIdentities), existence).
		WatchesRawSource(source.Kind(managed, client.Object(&corev1.Secret{}), byLabel)).
		// Every change to a published bundle, ours or anyone's, brings the
		// reconciler back to put the computed one in its place.
		WatchesRawSource(source.Kind(managed, client.Object(&corev1.ConfigMap{}), byLabel)).
		Complete(r)
}

// managedReader reads Weft-labelled Secrets and ConfigMaps: from the cache
// SetupWithManager makes, or through Client when the reconciler runs without
// it.
func (r *MeshIdentityReconciler) managedReader() client.Reader {
	if r.managed != nil {
		return r.managed
	}
	return r.Client
}

func (r *MeshIdentityReconciler) now() time.Time {
	if r.Clock == nil {
		return time.Now()
	}
	return r.Clock.Now()
}

// Reconcile brings one MeshIdentity's Certificates, trust bundles and status
// in line with the pods in its namespaces.
func (r *MeshIdentityReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	log := logr.FromContextOrDiscard(ctx)
	var mi meshv1alpha1.MeshIdentity
	if err := r.Client.Get(ctx, req.NamespacedName, &mi); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if mi.DeletionTimestamp != nil {
		// The garbage collector removes what it owns.
		return ctrl.Result{}, nil
	}
	now := r.now()
	rep := identityReport{}

	if _, err := identity.NamespaceSelector(&mi.Spec); err != nil {
		// Leave existing Certificates and bundles alone: a typo in the
		// selector must not take every identity away at once.
		rep.invalid = err.Error()
		return ctrl.Result{}, r.writeStatus(ctx, &mi, rep, now)
	}

	scope, err := r.scope(ctx, &mi)
	if err != nil {
		return ctrl.Result{}, err
	}
	rep.lost = scope.lost
	rep.proxyless = scope.proxyless

	var errs []error
	certs, retry, err := r.applyCertificates(ctx, &mi, scope, &rep)
	if err != nil {
		errs = append(errs, err)
	}
	if err := r.checkIssuer(ctx, &mi, scope, &rep); err != nil {
		errs = append(errs, err)
	}
	if err := r.assessCertificates(ctx, certs, &rep, now); err != nil {
		errs = append(errs, err)
	}
	bundleChange, err := r.publishTrustBundle(ctx, &mi, scope, certs, &rep, now)
	if err != nil {
		errs = append(errs, err)
	}
	if err := r.writeStatus(ctx, &mi, rep, now); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return ctrl.Result{}, err
	}

	next := sooner(rep.nextExpiry, bundleChange)
	if retry {
		next = sooner(next, now.Add(identityDeletionRetry))
	}
	if next.IsZero() {
		return ctrl.Result{}, nil
	}
	after := max(next.Sub(now)+time.Second, identityMinRequeue)
	log.V(1).Info("checking identities again", "meshIdentity", mi.Name, "after", after)
	return ctrl.Result{RequeueAfter: after}, nil
}

// identityScope is what a MeshIdentity covers right now.
type identityScope struct {
	// held are the namespaces it manages, sorted.
	held []string
	// lost maps the namespaces it selects but an older MeshIdentity manages
	// to that MeshIdentity's name.
	lost map[string]string
	// serviceAccounts are the service accounts in use per held namespace.
	serviceAccounts map[string][]string
	// proxyless are the running proxyless gRPC pods (namespace/name),
	// sorted: they serve Permissive as Strict.
	proxyless []string
}

func (r *MeshIdentityReconciler) scope(ctx context.Context, mi *meshv1alpha1.MeshIdentity) (identityScope, error) {
	s := identityScope{lost: map[string]string{}, serviceAccounts: map[string][]string{}}
	var mis meshv1alpha1.MeshIdentityList
	if err := r.Client.List(ctx, &mis); err != nil {
		return s, fmt.Errorf("listing meshidentities: %w", err)
	}
	var namespaces corev1.NamespaceList
	if err := r.Client.List(ctx, &namespaces); err != nil {
		return s, fmt.Errorf("listing namespaces: %w", err)
	}
	for i := range namespaces.Items {
		ns := &namespaces.Items[i]
		if !identity.Selects(mi, ns) {
			continue
		}
		owner := identity.NamespaceOwner(ns, mis.Items)
		if owner != nil && owner.UID != mi.UID {
			s.lost[ns.Name] = owner.Name
			continue
		}
		s.held = append(s.held, ns.Name)
	}
	slices.Sort(s.held)

	labels := map[string]map[string]string{}
	for i := range namespaces.Items {
		labels[namespaces.Items[i].Name] = namespaces.Items[i].Labels
	}
	for _, ns := range s.held {
		var pods corev1.PodList
		if err := r.Client.List(ctx, &pods, client.InNamespace(ns)); err != nil {
			return s, fmt.Errorf("listing pods in %s: %w", ns, err)
		}
		set := map[string]bool{}
		for i := range pods.Items {
			pod := &pods.Items[i]
			if sa, ok := identityServiceAccount(pod); ok {
				set[sa] = true
				if w := workload.Of(pod, labels[ns]); w.Meshed && w.Mode == workload.ModeProxyless {
					s.proxyless = append(s.proxyless, ns+"/"+pod.Name)
				}
			}
		}
		s.serviceAccounts[ns] = slices.Sorted(maps.Keys(set))
	}
	return s, nil
}

// identityServiceAccount is the service account of a pod that needs an identity:
// one that has not terminated. Pending pods count, since they wait for the
// certificate to start, and so do pods shutting down, which still serve.
func identityServiceAccount(pod *corev1.Pod) (string, bool) {
	if workload.Finished(pod) {
		return "", false
	}
	return workload.ServiceAccount(pod), true
}

// identityReport collects what the reconcile found, for the status.
type identityReport struct {
	invalid string
	lost    map[string]string
	// proxyless are the proxyless gRPC pods it covers.
	proxyless []string

	issuerMissing string
	// failures are condition-ready sentences naming the failing objects.
	failures []string
	// conflicts name objects under Weft's names that Weft does not manage.
	conflicts []string
	pending   []string

	identities, ready int32
	soonestExpiry     time.Time
	// nextExpiry is the earliest notAfter still ahead: when the status
	// changes by the clock alone.
	nextExpiry time.Time
}

// applyCertificates creates or updates the Certificate of every service
// account in use and deletes this MeshIdentity's other Certificates. It
// returns the Certificates as they are now, and whether some could not be
// written yet because another MeshIdentity is deleting its own copy.
func (r *MeshIdentityReconciler) applyCertificates(ctx context.Context, mi *meshv1alpha1.MeshIdentity, scope identityScope, rep *identityReport) ([]*cmapi.Certificate, bool, error) {
	log := logr.FromContextOrDiscard(ctx)
	desired := map[types.NamespacedName]*cmapi.Certificate{}
	for _, ns := range scope.held {
		for _, sa := range scope.serviceAccounts[ns] {
			cert := identity.Certificate(mi, ns, sa)
			key := client.ObjectKeyFromObject(cert)
			if prev, dup := desired[key]; dup {
				// Two names hashing alike; vanishingly rare, but never
				// let one service account get another's identity.
				rep.conflicts = append(rep.conflicts, fmt.Sprintf("service accounts %s and %s in %s map to the same Certificate name %s", prev.Spec.URIs[0], cert.Spec.URIs[0], ns, key.Name))
				continue
			}
			desired[key] = cert
		}
	}
	rep.identities = int32(len(desired))

	var (
		errs  []error
		out   []*cmapi.Certificate
		retry bool
	)
	for _, key := range slices.SortedFunc(maps.Keys(desired), compareNamespacedNames) {
		cert, waiting, err := r.applyCertificate(ctx, mi, desired[key], rep)
		switch {
		case err != nil:
			errs = append(errs, err)
		case waiting:
			retry = true
			rep.pending = append(rep.pending, fmt.Sprintf("Certificate %s: waiting for the previous object of that name to go", key))
		case cert != nil:
			out = append(out, cert)
		}
	}

	var owned cmapi.CertificateList
	if err := r.Client.List(ctx, &owned, client.MatchingLabelsSelector{Selector: identity.ManagedSelector()}); err != nil {
		return out, retry, errors.Join(append(errs, fmt.Errorf("listing certificates: %w", err))...)
	}
	for i := range owned.Items {
		cert := &owned.Items[i]
		if !controlledByMeshIdentity(cert, mi) || desired[client.ObjectKeyFromObject(cert)] != nil || cert.DeletionTimestamp != nil {
			continue
		}
		if err := deleteUnchanged(ctx, r.Client, cert); err != nil {
			errs = append(errs, fmt.Errorf("deleting certificate %s/%s: %w", cert.Namespace, cert.Name, err))
			continue
		}
		log.Info("deleted certificate of a service account no pod uses", "meshIdentity", mi.Name, "certificate", client.ObjectKeyFromObject(cert))
	}
	return out, retry, errors.Join(errs...)
}

func (r *MeshIdentityReconciler) applyCertificate(ctx context.Context, mi *meshv1alpha1.MeshIdentity, want *cmapi.Certificate, rep *identityReport) (*cmapi.Certificate, bool, error) {
	log := logr.FromContextOrDiscard(ctx)
	key := client.ObjectKeyFromObject(want)
	var cert cmapi.Certificate
	err := r.Client.Get(ctx, key, &cert)
	if apierrors.IsNotFound(err) {
		if err := controllerutil.SetControllerReference(mi, want, r.Scheme); err != nil {
			return nil, false, fmt.Errorf("certificate %s: %w", key, err)
		}
		if err := r.Client.Create(ctx, want); err != nil {
			if apierrors.IsAlreadyExists(err) {
				// Our cache does not see it yet, or someone else made it;
				// the next reconcile reads it.
				return nil, true, nil
			}
			return nil, false, fmt.Errorf("creating certificate %s: %w", key, err)
		}
		log.Info("created certificate", "meshIdentity", mi.Name, "certificate", key)
		return want, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("reading certificate %s: %w", key, err)
	}
	if cert.DeletionTimestamp != nil {
		return nil, true, nil
	}
	if !r.mayTakeOver(&cert, mi) {
		rep.conflicts = append(rep.conflicts, fmt.Sprintf("Certificate %s exists and is not managed by this MeshIdentity", key))
		return nil, false, nil
	}

	before := cert.DeepCopy()
	if cert.Labels == nil {
		cert.Labels = map[string]string{}
	}
	maps.Copy(cert.Labels, want.Labels)
	cert.Spec = want.Spec
	dropForeignController(&cert, mi)
	if err := controllerutil.SetControllerReference(mi, &cert, r.Scheme); err != nil {
		return nil, false, fmt.Errorf("certificate %s: %w", key, err)
	}
	if equality.Semantic.DeepEqual(before, &cert) {
		return &cert, false, nil
	}
	if err := r.Client.Update(ctx, &cert); err != nil {
		if apierrors.IsConflict(err) {
			return nil, true, nil
		}
		return nil, false, fmt.Errorf("updating certificate %s: %w", key, err)
	}
	log.Info("updated certificate", "meshIdentity", mi.Name, "certificate", key)
	return &cert, false, nil
}

// mayTakeOver reports whether the object is this MeshIdentity's, or Weft's
// and controlled by another MeshIdentity (or none), which happens when a
// namespace moves between MeshIdentities. Objects of anyone else are left
// alone.
func (r *MeshIdentityReconciler) mayTakeOver(obj client.Object, mi *meshv1alpha1.MeshIdentity) bool {
	if obj.GetLabels()[identity.LabelManagedBy] != identity.ManagedByWeft {
		return false
	}
	ref := metav1.GetControllerOf(obj)
	return ref == nil || ref.UID == mi.UID || isMeshIdentityRef(ref)
}

func isMeshIdentityRef(ref *metav1.OwnerReference) bool {
	return ref.APIVersion == meshv1alpha1.GroupVersion.String() && ref.Kind == "MeshIdentity"
}

// dropForeignController removes another MeshIdentity's controller reference
// so that this one can take the object over.
func dropForeignController(obj client.Object, mi *meshv1alpha1.MeshIdentity) {
	obj.SetOwnerReferences(slices.DeleteFunc(obj.GetOwnerReferences(), func(ref metav1.OwnerReference) bool {
		return ref.Controller != nil && *ref.Controller && ref.UID != mi.UID && isMeshIdentityRef(&ref)
	}))
}

func controlledByMeshIdentity(obj client.Object, mi *meshv1alpha1.MeshIdentity) bool {
	ref := metav1.GetControllerOf(obj)
	return ref != nil && ref.UID == mi.UID
}

// deleteUnchanged deletes the object only if it is still the version read, so
// that a MeshIdentity that has just taken it over keeps it.
func deleteUnchanged(ctx context.Context, c client.Client, obj client.Object) error {
	uid, rv := obj.GetUID(), obj.GetResourceVersion()
	err := c.Delete(ctx, obj, client.Preconditions{UID: &uid, ResourceVersion: &rv})
	if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
		return nil
	}
	return err
}

func compareNamespacedNames(a, b types.NamespacedName) int {
	return cmp.Or(strings.Compare(a.Namespace, b.Namespace), strings.Compare(a.Name, b.Name))
}

// checkIssuer records a missing Issuer or ClusterIssuer. Issuers of other
// API groups (external issuers) cannot be looked up and are trusted to exist.
func (r *MeshIdentityReconciler) checkIssuer(ctx context.Context, mi *meshv1alpha1.MeshIdentity, scope identityScope, rep *identityReport) error {
	ref := identity.IssuerRef(&mi.Spec)
	if ref.Group != identity.DefaultIssuerGroup {
		return nil
	}
	if ref.Kind == cmapi.ClusterIssuerKind {
		err := r.Client.Get(ctx, types.NamespacedName{Name: ref.Name}, &cmapi.ClusterIssuer{})
		if apierrors.IsNotFound(err) {
			rep.issuerMissing = fmt.Sprintf("ClusterIssuer %q (spec.issuerRef) not found", ref.Name)
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading clusterissuer %s: %w", ref.Name, err)
		}
		return nil
	}
	var missing []string
	for _, ns := range scope.held {
		if len(scope.serviceAccounts[ns]) == 0 {
			continue
		}
		err := r.Client.Get(ctx, types.NamespacedName{Namespace: ns, Name: ref.Name}, &cmapi.Issuer{})
		if apierrors.IsNotFound(err) {
			missing = append(missing, ns)
			continue
		}
		if err != nil {
			return fmt.Errorf("reading issuer %s/%s: %w", ns, ref.Name, err)
		}
	}
	if len(missing) > 0 {
		rep.issuerMissing = fmt.Sprintf("Issuer %q (spec.issuerRef) not found in namespace %s", ref.Name, nameSome(missing))
	}
	return nil
}

// assessCertificates reads the Certificates' status and the requests of the
// ones not issued.
func (r *MeshIdentityReconciler) assessCertificates(ctx context.Context, certs []*cmapi.Certificate, rep *identityReport, now time.Time) error {
	requests := map[string][]cmapi.CertificateRequest{}
	var errs []error
	for _, cert := range certs {
		key := client.ObjectKeyFromObject(cert)
		h := identity.AssessCertificate(cert, now)
		if h.Ready {
			rep.ready++
		}
		if na := cert.Status.NotAfter; na != nil {
			rep.soonestExpiry = sooner(rep.soonestExpiry, na.Time)
			if na.After(now) {
				rep.nextExpiry = sooner(rep.nextExpiry, na.Time)
			}
		}
		if h.Failure != "" {
			rep.failures = append(rep.failures, fmt.Sprintf("Certificate %s: %s", key, h.Failure))
			continue
		}
		if h.Ready {
			continue
		}
		crs, ok := requests[cert.Namespace]
		if !ok {
			var list cmapi.CertificateRequestList
			if err := r.Client.List(ctx, &list, client.InNamespace(cert.Namespace)); err != nil {
				errs = append(errs, fmt.Errorf("listing certificaterequests in %s: %w", cert.Namespace, err))
				continue
			}
			crs = list.Items
			requests[cert.Namespace] = crs
		}
		if cr, msg := identity.DeniedRequest(cert, crs); cr != nil {
			rep.failures = append(rep.failures, fmt.Sprintf("Certificate %s: CertificateRequest %s was denied: %s", key, cr.Name, msg))
			continue
		}
		rep.pending = append(rep.pending, fmt.Sprintf("Certificate %s: %s", key, h.Pending))
	}
	return errors.Join(errs...)
}

// publishTrustBundle computes the trust bundle, records its roots in the
// MeshIdentity's status, writes it to every held namespace and removes this
// MeshIdentity's bundles from the others. It returns when the bundle will
// change by itself (a root expires or leaves its overlap).
//
// The bundle comes from two sources only: the ca.crt of the Secrets
// cert-manager issued for this MeshIdentity's Certificates, and the record in
// status.trustRoots, which only the controller and cluster administrators may
// write. The published ConfigMaps are output: anyone who may write ConfigMaps
// in one namespace can edit that namespace's copy, and were the copies read
// back as roots, a root added there would reach every namespace. They are
// only compared with the computed bundle and rewritten when they differ.
func (r *MeshIdentityReconciler) publishTrustBundle(ctx context.Context, mi *meshv1alpha1.MeshIdentity, scope identityScope, certs []*cmapi.Certificate, rep *identityReport, now time.Time) (time.Time, error) {
	log := logr.FromContextOrDiscard(ctx)
	issued, err := r.issuedCAs(ctx, certs)
	if err != nil {
		// A root missing from an incomplete view would count as retired.
		return time.Time{}, err
	}
	duration, _ := identity.Lifetimes(&mi.Spec)
	tb, err := identity.BuildTrustBundle(identity.TrustBundleInput{
		Now:      now,
		Issued:   issued,
		Recorded: mi.Status.TrustRoots,
		Overlap:  duration,
	})
	if err != nil {
		log.Error(err, "leaving unusable roots out of the trust bundle", "meshIdentity", mi.Name)
	}
	if ok, err := r.recordTrustRoots(ctx, mi, tb.Roots); !ok || err != nil {
		return time.Time{}, err
	}

	var cms corev1.ConfigMapList
	if err := r.managedReader().List(ctx, &cms, client.MatchingLabelsSelector{Selector: identity.ManagedSelector()}); err != nil {
		return time.Time{}, fmt.Errorf("listing trust bundles: %w", err)
	}
	ours := map[string]*corev1.ConfigMap{}
	for i := range cms.Items {
		cm := &cms.Items[i]
		if cm.Name == identity.TrustBundleName && controlledByMeshIdentity(cm, mi) {
			ours[cm.Namespace] = cm
		}
	}

	var errs []error
	held := map[string]bool{}
	for _, ns := range scope.held {
		held[ns] = true
		if len(tb.PEM) == 0 {
			// Nothing issued yet: a pod waits for a missing bundle to
			// appear, but would start with an empty one and fail.
			continue
		}
		if err := r.applyTrustBundle(ctx, mi, identity.TrustBundleConfigMap(mi.Name, ns, tb), rep); err != nil {
			errs = append(errs, err)
		}
	}
	for ns, cm := range ours {
		if held[ns] {
			continue
		}
		if err := deleteUnchanged(ctx, r.Client, cm); err != nil {
			errs = append(errs, fmt.Errorf("deleting trust bundle in %s: %w", ns, err))
			continue
		}
		log.Info("deleted trust bundle of a namespace no longer covered", "meshIdentity", mi.Name, "namespace", ns)
	}
	return tb.NextChange, errors.Join(errs...)
}

// issuedCAs reads the ca.crt of the Secrets cert-manager wrote for the
// Certificates. A Secret not written yet is skipped.
func (r *MeshIdentityReconciler) issuedCAs(ctx context.Context, certs []*cmapi.Certificate) ([][]byte, error) {
	var (
		issued [][]byte
		errs   []error
	)
	for _, cert := range certs {
		var secret corev1.Secret
		err := r.managedReader().Get(ctx, types.NamespacedName{Namespace: cert.Namespace, Name: cert.Spec.SecretName}, &secret)
		if apierrors.IsNotFound(err) {
			continue
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("reading secret %s/%s: %w", cert.Namespace, cert.Spec.SecretName, err))
			continue
		}
		if ca := secret.Data[identity.TrustBundleKey]; len(ca) > 0 {
			issued = append(issued, ca)
		}
	}
	return issued, errors.Join(errs...)
}

// recordTrustRoots stores the roots about to be published in
// status.trustRoots before any ConfigMap carries them, so that every root
// ever published is remembered and keeps its overlap once retired. It
// reports false when the MeshIdentity changed meanwhile: nothing may be
// published from a record that was not stored, and the update event brings
// the reconciler back.
func (r *MeshIdentityReconciler) recordTrustRoots(ctx context.Context, mi *meshv1alpha1.MeshIdentity, roots []meshv1alpha1.TrustRoot) (bool, error) {
	if equality.Semantic.DeepEqual(roots, mi.Status.TrustRoots) {
		return true, nil
	}
	log := logr.FromContextOrDiscard(ctx)
	updated := mi.DeepCopy()
	updated.Status.TrustRoots = roots
	if err := r.Client.Status().Update(ctx, updated); err != nil {
		if apierrors.IsConflict(err) {
			log.V(1).Info("meshidentity changed before its trust roots were recorded; reconciling again", "meshIdentity", mi.Name)
			return false, nil
		}
		return false, fmt.Errorf("recording the trust roots of meshidentity %s: %w", mi.Name, err)
	}
	if !equality.Semantic.DeepEqual(updated.Status.TrustRoots, roots) {
		// Pruned: the installed CRD predates the field. Publishing goes
		// on, but retired roots are forgotten at once.
		log.Error(errors.New("status.trustRoots was not stored"), "the MeshIdentity CRD is older than the controller; install this version's CRDs", "meshIdentity", mi.Name)
	}
	*mi = *updated
	var current, retired []string
	for _, root := range roots {
		if root.RetiredAt == nil {
			current = append(current, root.Fingerprint)
		} else {
			retired = append(retired, root.Fingerprint)
		}
	}
	log.Info("recorded trust roots", "meshIdentity", mi.Name, "current", current, "retired", retired)
	return true, nil
}

// applyTrustBundle makes the namespace's bundle exactly want. Whatever else
// is found in it (roots, keys, binary data) is someone's edit and is
// overwritten; none of it is kept.
func (r *MeshIdentityReconciler) applyTrustBundle(ctx context.Context, mi *meshv1alpha1.MeshIdentity, want *corev1.ConfigMap, rep *identityReport) error {
	log := logr.FromContextOrDiscard(ctx)
	key := client.ObjectKeyFromObject(want)
	var cm corev1.ConfigMap
	err := r.managedReader().Get(ctx, key, &cm)
	if apierrors.IsNotFound(err) {
		if err := controllerutil.SetControllerReference(mi, want, r.Scheme); err != nil {
			return fmt.Errorf("trust bundle %s: %w", key, err)
		}
		if err := r.Client.Create(ctx, want); err != nil {
			if apierrors.IsAlreadyExists(err) {
				// Not labelled as Weft's, so not in our cache: someone
				// else's ConfigMap holds the name.
				rep.conflicts = append(rep.conflicts, fmt.Sprintf("ConfigMap %s exists and is not managed by Weft", key))
				return nil
			}
			return fmt.Errorf("creating trust bundle %s: %w", key, err)
		}
		log.Info("published trust bundle", "meshIdentity", mi.Name, "configMap", key)
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading trust bundle %s: %w", key, err)
	}
	if cm.DeletionTimestamp != nil {
		return nil
	}
	if !r.mayTakeOver(&cm, mi) {
		rep.conflicts = append(rep.conflicts, fmt.Sprintf("ConfigMap %s exists and is not managed by this MeshIdentity", key))
		return nil
	}
	if ptr.Deref(cm.Immutable, false) {
		// Weft never makes the bundle immutable, and an immutable one
		// could not be rotated or repaired: replace it. Its deletion
		// brings the reconciler back to create it anew.
		if err := deleteUnchanged(ctx, r.Client, &cm); err != nil {
			return fmt.Errorf("replacing immutable trust bundle %s: %w", key, err)
		}
		log.Info("deleted a trust bundle made immutable, to publish it again", "meshIdentity", mi.Name, "configMap", key)
		return nil
	}
	before := cm.DeepCopy()
	if cm.Labels == nil {
		cm.Labels = map[string]string{}
	}
	maps.Copy(cm.Labels, want.Labels)
	delete(cm.Annotations, identity.LegacyAnnotationRetiredRoots)
	cm.Data = want.Data
	cm.BinaryData = nil
	dropForeignController(&cm, mi)
	if err := controllerutil.SetControllerReference(mi, &cm, r.Scheme); err != nil {
		return fmt.Errorf("trust bundle %s: %w", key, err)
	}
	if equality.Semantic.DeepEqual(before, &cm) {
		return nil
	}
	if err := r.Client.Update(ctx, &cm); err != nil {
		if apierrors.IsConflict(err) {
			return nil // the update event brings us back
		}
		return fmt.Errorf("updating trust bundle %s: %w", key, err)
	}
	log.Info("updated trust bundle", "meshIdentity", mi.Name, "configMap", key)
	return nil
}

func sooner(a, b time.Time) time.Time {
	if a.IsZero() || (!b.IsZero() && b.Before(a)) {
		return b
	}
	return a
}

// nameSome names up to identityMaxNamed items and counts the rest.
func nameSome(items []string) string {
	s := slices.Clone(items)
	slices.Sort(s)
	if len(s) <= identityMaxNamed {
		return strings.Join(s, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(s[:identityMaxNamed], ", "), len(s)-identityMaxNamed)
}

// podIdentityChanged passes pod events that can change which service
// accounts need an identity: a pod appearing, going, or terminating.
func podIdentityChanged() predicate.Predicate {
	return predicate.Funcs{
		CreateFunc: func(event.CreateEvent) bool { return true },
		DeleteFunc: func(event.DeleteEvent) bool { return true },
		UpdateFunc: func(e event.UpdateEvent) bool {
			oldPod, ok1 := e.ObjectOld.(*corev1.Pod)
			newPod, ok2 := e.ObjectNew.(*corev1.Pod)
			if !ok1 || !ok2 {
				return true
			}
			oldSA, oldLive := identityServiceAccount(oldPod)
			newSA, newLive := identityServiceAccount(newPod)
			return oldSA != newSA || oldLive != newLive
		},
		GenericFunc: func(event.GenericEvent) bool { return false },
	}
}

func (r *MeshIdentityReconciler) allMeshIdentities(ctx context.Context, _ client.Object) []reconcile.Request {
	var mis meshv1alpha1.MeshIdentityList
	if err := r.Client.List(ctx, &mis); err != nil {
		logr.FromContextOrDiscard(ctx).Error(err, "listing meshidentities to requeue")
		return nil
	}
	reqs := make([]reconcile.Request, 0, len(mis.Items))
	for i := range mis.Items {
		reqs = append(reqs, reconcile.Request{NamespacedName: types.NamespacedName{Name: mis.Items[i].Name}})
	}
	return reqs
}

func (r *MeshIdentityReconciler) meshIdentitiesForPod(ctx context.Context, obj client.Object) []reconcile.Request {
	var ns corev1.Namespace
	if err := r.Client.Get(ctx, types.NamespacedName{Name: obj.GetNamespace()}, &ns); err != nil {
		// A namespace event follows if it appears; nothing selects a
		// namespace that is gone.
		return nil
	}
	var mis meshv1alpha1.MeshIdentityList
	if err := r.Client.List(ctx, &mis); err != nil {
		logr.FromContextOrDiscard(ctx).Error(err, "listing meshidentities to requeue")
		return nil
	}
	var reqs []reconcile.Request
	for i := range mis.Items {
		if identity.Selects(&mis.Items[i], &ns) {
			reqs = append(reqs, reconcile.Request{NamespacedName: types.NamespacedName{Name: mis.Items[i].Name}})
		}
	}
	return reqs
}

// meshIdentityForRequest maps a CertificateRequest to the MeshIdentity that
// controls its Certificate.
func (r *MeshIdentityReconciler) meshIdentityForRequest(ctx context.Context, obj client.Object) []reconcile.Request {
	name := obj.GetAnnotations()[cmapi.CertificateNameKey]
	if ref := metav1.GetControllerOf(obj); ref != nil && ref.Kind == cmapi.CertificateKind {
		name = ref.Name
	}
	if name == "" {
		return nil
	}
	var cert cmapi.Certificate
	if err := r.Client.Get(ctx, types.NamespacedName{Namespace: obj.GetNamespace(), Name: name}, &cert); err != nil {
		return nil
	}
	if ref := metav1.GetControllerOf(&cert); ref != nil && isMeshIdentityRef(ref) {
		return []reconcile.Request{{NamespacedName: types.NamespacedName{Name: ref.Name}}}
	}
	return nil
}

// meshIdentitiesByLabel maps a Weft-labelled Secret or ConfigMap to the
// MeshIdentity its weft.dev/identity label names.
func (r *MeshIdentityReconciler) meshIdentitiesByLabel(ctx context.Context, obj client.Object) []reconcile.Request {
	v, ok := obj.GetLabels()[meshv1alpha1.LabelIdentity]
	if !ok {
		return nil
	}
	if ref := metav1.GetControllerOf(obj); ref != nil && isMeshIdentityRef(ref) {
		return []reconcile.Request{{NamespacedName: types.NamespacedName{Name: ref.Name}}}
	}
	var mis meshv1alpha1.MeshIdentityList
	if err := r.Client.List(ctx, &mis); err != nil {
		logr.FromContextOrDiscard(ctx).Error(err, "listing meshidentities to requeue")
		return nil
	}
	var reqs []reconcile.Request
	for i := range mis.Items {
		if identity.LabelValue(mis.Items[i].Name) == v {
			reqs = append(reqs, reconcile.Request{NamespacedName: types.NamespacedName{Name: mis.Items[i].Name}})
		}
	}
	return reqs
}
