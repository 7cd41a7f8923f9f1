package testsigner

import (
	"context"
	"fmt"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// EnsureIssuer creates the Signer's issuer object if it does not exist, a CA
// issuer whose spec names a Secret the Signer never reads (it keeps its key
// in memory), and marks it Ready the way cert-manager does once it has
// checked the CA. namespace is ignored for a ClusterIssuer and required for
// an Issuer.
func (s *Signer) EnsureIssuer(ctx context.Context, namespace string) error {
	spec := cmapi.IssuerSpec{IssuerConfig: cmapi.IssuerConfig{CA: &cmapi.CAIssuer{SecretName: s.opts.IssuerName + "-ca"}}}
	var obj cmapi.GenericIssuer
	if s.opts.IssuerKind == cmapi.ClusterIssuerKind {
		obj = &cmapi.ClusterIssuer{ObjectMeta: metav1.ObjectMeta{Name: s.opts.IssuerName}, Spec: spec}
	} else {
		if namespace == "" {
			return fmt.Errorf("testsigner: an Issuer needs a namespace")
		}
		obj = &cmapi.Issuer{ObjectMeta: metav1.ObjectMeta{Name: s.opts.IssuerName, Namespace: namespace}, Spec: spec}
	}
	if err := s.c.Create(ctx, obj); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating %s %s: %w", s.opts.IssuerKind, s.opts.IssuerName, err)
	}
	if err := s.c.Get(ctx, client.ObjectKeyFromObject(obj), obj); err != nil {
		return fmt.Errorf("reading %s %s: %w", s.opts.IssuerKind, s.opts.IssuerName, err)
	}
	st := obj.GetStatus()
	ready := cmapi.IssuerCondition{
		Type: cmapi.IssuerConditionReady, Status: cmmeta.ConditionTrue, Reason: "KeyPairVerified",
		Message: "Signing CA verified", ObservedGeneration: obj.GetGeneration(),
	}
	conds := st.Conditions[:0]
	for _, c := range st.Conditions {
		if c.Type != cmapi.IssuerConditionReady {
			conds = append(conds, c)
			continue
		}
		if c.Status == cmmeta.ConditionTrue {
			return nil
		}
	}
	now := metav1.NewTime(s.opts.Clock.Now())
	ready.LastTransitionTime = &now
	st.Conditions = append(conds, ready)
	if err := s.c.Status().Update(ctx, obj); err != nil {
		return fmt.Errorf("marking %s %s ready: %w", s.opts.IssuerKind, s.opts.IssuerName, err)
	}
	return nil
}
