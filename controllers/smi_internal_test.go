package controllers

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/controller-runtime/pkg/event"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/weft-mesh/weft/internal/ingest"
	"github.com/weft-mesh/weft/internal/ir"
	"github.com/weft-mesh/weft/internal/testenv"
)

// TestSMISplitsReadBeforeTheFirstRebuild: a controller that starts where
// SMI splits already exist must see them in its first rebuild, before its
// CRD watch has run; otherwise every proxy would be pushed a configuration
// without the splits at each controller start.
func TestSMISplitsReadBeforeTheFirstRebuild(t *testing.T) {
	env := testenv.Start(t)
	if _, err := envtest.InstallCRDs(env.Config, envtest.CRDInstallOptions{Paths: []string{filepath.Join(testenv.RepoRoot(), "config", "smi")}, ErrorIfPathMissing: true}); err != nil {
		t.Fatal(err)
	}
	split := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "split.smi-spec.io/v1alpha1", "kind": "TrafficSplit",
		"metadata": map[string]any{"namespace": "default", "name": "checkout"},
		"spec": map[string]any{"service": "checkout", "backends": []any{
			map[string]any{"service": "checkout-v2", "weight": "10"},
			map[string]any{"service": "checkout", "weight": "90"},
		}},
	}}
	if err := env.Client.Create(t.Context(), split); err != nil {
		t.Fatal(err)
	}

	mgr, err := ctrl.NewManager(env.Config, ctrl.Options{
		Scheme:                 env.Scheme,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Controller:             config.Controller{SkipNameValidation: ptr.To(true)},
	})
	if err != nil {
		t.Fatal(err)
	}
	// The source alone, without its CRD watch: only ensure can find the
	// splits.
	s := &smiSource{cache: mgr.GetCache(), reader: mgr.GetAPIReader(), changes: make(chan event.GenericEvent, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("manager: %v", err)
		}
	})
	if !mgr.GetCache().WaitForCacheSync(t.Context()) {
		t.Fatal("cache did not sync")
	}
	if got := s.list(); len(got) != 0 {
		t.Fatalf("before ensure the source lists %d splits", len(got))
	}
	s.ensure(t.Context())
	got := s.list()
	if len(got) != 1 || got[0].GetName() != "checkout" {
		t.Fatalf("after ensure the source lists %v, want the split that exists", got)
	}
	if v := s.current.Load().gvk.Version; v != "v1alpha4" {
		t.Errorf("reads SMI splits at %s, want the newest served version, v1alpha4", v)
	}
}

// TestSMIEventNotesFitTheAPI: a verdict message longer than the 1 kB the
// API server allows in an Event's note (a split with many missing
// backends) is cut, not sent whole to be refused; each change of verdict
// gives one Event and an unchanged one none.
func TestSMIEventNotesFitTheAPI(t *testing.T) {
	rec := events.NewFakeRecorder(10)
	r := newSMIReporter(rec, NewMetrics(nil).SMISplitReady)
	long := strings.Repeat("spec.backends[9].service: Service shop/ünknown does not exist; ", 40)
	st := ingest.ExternalStatus{
		Ref: ir.ObjectRef{Group: ingest.SMIGroup, Kind: "TrafficSplit", Namespace: "shop", Name: "checkout"}, UID: "u1", ResourceVersion: "7",
		APIVersion: "split.smi-spec.io/v1alpha4", Generation: 2,
		Ready: metav1.Condition{Type: "Ready", Status: metav1.ConditionFalse, Reason: "BackendNotFound", Message: long},
	}
	r.report([]ingest.ExternalStatus{st})
	r.report([]ingest.ExternalStatus{st})
	if n := len(rec.Events); n != 1 {
		t.Fatalf("%d events for one verdict reported twice, want 1", n)
	}
	e := <-rec.Events
	note := strings.TrimPrefix(e, "Warning BackendNotFound ")
	if len(note) > maxNote || !utf8.ValidString(note) || !strings.HasPrefix(long, strings.TrimSuffix(note, " …")) {
		t.Errorf("note of %d bytes (valid UTF-8: %v), want the message cut to at most %d", len(note), utf8.ValidString(note), maxNote)
	}
}
