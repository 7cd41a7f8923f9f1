package controllers

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	meshv1alpha1 "github.com/weft-mesh/weft/api/v1alpha1"
)

// meshIdentityStatus turns what a reconcile found into the MeshIdentity's
// status. Conditions keep their lastTransitionTime while their status holds.
func meshIdentityStatus(mi *meshv1alpha1.MeshIdentity, rep identityReport, now time.Time) meshv1alpha1.MeshIdentityStatus {
	st := *mi.Status.DeepCopy()
	st.ObservedGeneration = mi.Generation
	st.Identities, st.ReadyIdentities = rep.identities, rep.ready
	st.SoonestExpiry = nil
	if !rep.soonestExpiry.IsZero() {
		st.SoonestExpiry = &metav1.Time{Time: rep.soonestExpiry}
	}
	set := func(t string, status metav1.ConditionStatus, reason, msg string) {
		meta.SetStatusCondition(&st.Conditions, metav1.Condition{
			Type: t, Status: status, Reason: reason, Message: msg,
			ObservedGeneration: mi.Generation, LastTransitionTime: metav1.NewTime(now),
		})
	}

	if rep.invalid != "" {
		set(meshv1alpha1.ConditionAccepted, metav1.ConditionFalse, meshv1alpha1.ReasonInvalid, rep.invalid)
		set(meshv1alpha1.ConditionReady, metav1.ConditionFalse, meshv1alpha1.ReasonInvalid, rep.invalid)
		meta.RemoveStatusCondition(&st.Conditions, meshv1alpha1.ConditionResolvedRefs)
		meta.RemoveStatusCondition(&st.Conditions, meshv1alpha1.ConditionDegraded)
		return st
	}

	accepted := len(rep.lost) == 0
	if accepted {
		set(meshv1alpha1.ConditionAccepted, metav1.ConditionTrue, meshv1alpha1.ReasonAccepted, "")
	} else {
		set(meshv1alpha1.ConditionAccepted, metav1.ConditionFalse, meshv1alpha1.ReasonConflicted, namespaceConflictMessage(rep.lost))
	}

	if rep.issuerMissing != "" {
		set(meshv1alpha1.ConditionResolvedRefs, metav1.ConditionFalse, meshv1alpha1.ReasonIssuerNotFound, rep.issuerMissing)
	} else {
		set(meshv1alpha1.ConditionResolvedRefs, metav1.ConditionTrue, meshv1alpha1.ReasonResolvedRefs, "")
	}

	failures := slices.Concat(rep.failures, rep.conflicts)
	switch {
	case rep.issuerMissing != "":
		set(meshv1alpha1.ConditionDegraded, metav1.ConditionTrue, meshv1alpha1.ReasonIssuerNotFound, rep.issuerMissing)
	case len(failures) > 0:
		set(meshv1alpha1.ConditionDegraded, metav1.ConditionTrue, meshv1alpha1.ReasonCertificateFailed, nameSome(failures))
	case rep.identities == 0:
		set(meshv1alpha1.ConditionDegraded, metav1.ConditionFalse, meshv1alpha1.ReasonNoWorkloads, "")
	case len(rep.pending) > 0:
		set(meshv1alpha1.ConditionDegraded, metav1.ConditionFalse, meshv1alpha1.ReasonIssuing, "")
	default:
		set(meshv1alpha1.ConditionDegraded, metav1.ConditionFalse, meshv1alpha1.ReasonIssued, "")
	}

	if mi.Spec.MTLS.Mode == meshv1alpha1.MTLSPermissive && len(rep.proxyless) > 0 {
		set(meshv1alpha1.ConditionProxylessCompatible, metav1.ConditionFalse, meshv1alpha1.ReasonUnsupportedByProxyless,
			fmt.Sprintf("Permissive is served as mTLS by proxyless gRPC servers, since gRPC cannot tell plaintext from TLS on one port: plaintext callers of %s are refused; mesh those callers, or give these pods a sidecar (weft.dev/inject: \"true\") so Permissive holds", nameSome(rep.proxyless)))
	} else {
		meta.RemoveStatusCondition(&st.Conditions, meshv1alpha1.ConditionProxylessCompatible)
	}

	switch {
	case !accepted:
		set(meshv1alpha1.ConditionReady, metav1.ConditionFalse, meshv1alpha1.ReasonConflicted, namespaceConflictMessage(rep.lost))
	case rep.issuerMissing != "":
		set(meshv1alpha1.ConditionReady, metav1.ConditionFalse, meshv1alpha1.ReasonIssuerNotFound, rep.issuerMissing)
	case len(failures) > 0:
		set(meshv1alpha1.ConditionReady, metav1.ConditionFalse, meshv1alpha1.ReasonCertificateFailed,
			fmt.Sprintf("%d of %d identities ready; %s", rep.ready, rep.identities, nameSome(failures)))
	case rep.identities == 0:
		set(meshv1alpha1.ConditionReady, metav1.ConditionTrue, meshv1alpha1.ReasonNoWorkloads,
			"no running pod in the selected namespaces (spec.namespaceSelector) needs an identity")
	case rep.ready < rep.identities:
		set(meshv1alpha1.ConditionReady, metav1.ConditionFalse, meshv1alpha1.ReasonIssuing,
			fmt.Sprintf("%d of %d identities ready; %s", rep.ready, rep.identities, nameSome(rep.pending)))
	default:
		set(meshv1alpha1.ConditionReady, metav1.ConditionTrue, meshv1alpha1.ReasonReady,
			fmt.Sprintf("%d of %d identities ready", rep.ready, rep.identities))
	}
	return st
}

func namespaceConflictMessage(lost map[string]string) string {
	byOwner := map[string][]string{}
	for ns, owner := range lost {
		byOwner[owner] = append(byOwner[owner], ns)
	}
	var parts []string
	for _, owner := range slices.Sorted(maps.Keys(byOwner)) {
		parts = append(parts, fmt.Sprintf("namespace %s is managed by the older MeshIdentity %s", nameSome(byOwner[owner]), owner))
	}
	return strings.Join(parts, "; ") + "; narrow spec.namespaceSelector so that each namespace has one MeshIdentity"
}

// writeStatus writes the status if it changed. A conflict means a newer
// version exists, whose update event reconciles again.
func (r *MeshIdentityReconciler) writeStatus(ctx context.Context, mi *meshv1alpha1.MeshIdentity, rep identityReport, now time.Time) error {
	st := meshIdentityStatus(mi, rep, now)
	if equality.Semantic.DeepEqual(st, mi.Status) {
		return nil
	}
	mi.Status = st
	if err := r.Client.Status().Update(ctx, mi); err != nil {
		if apierrors.IsConflict(err) {
			logr.FromContextOrDiscard(ctx).V(1).Info("status changed meanwhile; reconciling again", "meshIdentity", mi.Name)
			return nil
		}
		return fmt.Errorf("writing status of meshidentity %s: %w", mi.Name, err)
	}
	return nil
}
