package command

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"sigs.k8s.io/yaml"

	"github.com/weft-mesh/weft/internal/cli"
	"github.com/weft-mesh/weft/internal/inject"
	"github.com/weft-mesh/weft/internal/xds/translate"
)

// Exit codes.
const (
	exitOK       = 0
	exitFindings = 1
	exitUsage    = 2
)

// errFindings ends a command that ran and found errors.
var errFindings = errors.New("findings")

// Run runs kubectl weft with args and returns its exit code: 0 when
// nothing is wrong, 1 when a command found problems, 2 when it could not
// run (bad flags, unreadable manifests, no cluster).
func Run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	root := newRoot(stdin, stdout)
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.Execute()
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, errFindings):
		return exitFindings
	default:
		fmt.Fprintln(stderr, "error:", err)
		return exitUsage
	}
}

func newRoot(stdin io.Reader, stdout io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use: "kubectl-weft",
		// kubectl runs the plugin as `kubectl weft`; help says so.
		Annotations:   map[string]string{cobra.CommandDisplayNameAnnotation: "kubectl weft"},
		Short:         "See, check and preview the Weft service mesh",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	k := &kube{flags: genericclioptions.NewConfigFlags(true)}
	k.flags.AddFlags(root.PersistentFlags())
	root.AddCommand(newAnalyze(k, stdin, stdout), newRender(stdin, stdout), newInject(stdin, stdout), newDiff(stdin, stdout),
		newCheck(k, stdout), newProxyStatus(k, stdout), newProxyConfig(k, stdout))
	return root
}

func newAnalyze(k *kube, stdin io.Reader, stdout io.Writer) *cobra.Command {
	var files, kustomizations []string
	var output string
	var useCluster bool
	cmd := &cobra.Command{
		Use:   "analyze [-f FILE|DIR] [-k DIR] [--use-cluster]",
		Short: "Say what Weft's controller makes, or would make, of the mesh's objects",
		Long: `analyze runs the controller's own stages (ingest, translation, status) and
prints every condition that would not be fine: invalid fields, missing targets
and backends, splits and routes that conflict on one apex, route rules Envoy
would refuse, policies that select nothing.

With -f or -k it reads manifests and needs no cluster; with --use-cluster it
adds the cluster's objects to them (the manifests win where both have an
object), to see what applying them would do. Without -f or -k it analyses
the cluster as it is; -n limits the findings to one namespace (the analysis
always takes in the whole mesh). It exits 1 when it finds an error, so a CI
job can gate a pull request on it.`,
		Example: `  kubectl weft analyze -f deploy/
  kubectl weft analyze -k overlays/prod --use-cluster
  kubectl weft analyze -n shop`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			offline := len(files) > 0 || len(kustomizations) > 0
			in := cli.Input{Files: files, Kustomizations: kustomizations, Stdin: stdin}
			only := ""
			if !offline || useCluster {
				c, _, err := k.clients()
				if err != nil {
					return err
				}
				live, err := cli.ListCluster(cmd.Context(), c)
				if err != nil {
					return err
				}
				in.Live = live
				if ns, explicit, err := k.namespace(); err == nil && explicit && !offline {
					only = ns
				}
			}
			m, err := cli.Read(in)
			if err != nil {
				return err
			}
			rep, err := cli.Analyze(m, translate.Options{})
			if err != nil {
				return err
			}
			if only != "" {
				rep.InNamespace(only)
			}
			if err := printReport(stdout, rep, output); err != nil {
				return err
			}
			if rep.Errors() > 0 {
				return errFindings
			}
			return nil
		},
	}
	cmd.Flags().StringSliceVarP(&files, "filename", "f", nil, "manifest file or directory (repeatable; - for stdin)")
	cmd.Flags().StringSliceVarP(&kustomizations, "kustomize", "k", nil, "kustomization directory, built as kubectl kustomize does (repeatable)")
	cmd.Flags().BoolVar(&useCluster, "use-cluster", false, "with -f or -k: add the cluster's objects to the manifests")
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table, yaml or json")
	return cmd
}

func checkOutput(o string) error {
	switch o {
	case "table", "yaml", "json":
		return nil
	}
	return fmt.Errorf("--output=%q: want table, yaml or json", o)
}

func printReport(w io.Writer, rep *cli.Report, output string) error {
	return printObject(w, output, rep, func(w io.Writer) error { return reportTable(w, rep) })
}

func reportTable(w io.Writer, rep *cli.Report) error {
	if len(rep.Findings) == 0 {
		_, err := fmt.Fprintf(w, "No problems: Weft would accept all %d objects.\n", rep.Objects)
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SEVERITY\tOBJECT\tPARENT\tCONDITION\tREASON\tMESSAGE")
	for _, f := range rep.Findings {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", f.Severity, f.Object, dash(f.Parent), dash(f.Condition), f.Reason, oneLine(f.Message))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "\n%d errors, %d warnings in %d objects.\n", rep.Errors(), len(rep.Findings)-rep.Errors(), rep.Objects)
	return err
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func oneLine(s string) string { return strings.ReplaceAll(s, "\n", " ") }

func newRender(stdin io.Reader, stdout io.Writer) *cobra.Command {
	var files []string
	var pod, wl, output string
	cmd := &cobra.Command{
		Use:   "render -f FILE|DIR (--pod NAMESPACE/NAME | --workload NAMESPACE/KIND/NAME)",
		Short: "Show the proxy configuration a workload would receive, offline",
		Long: `render runs the controller's stages on the given manifests and prints what
the proxy of one pod (or of a workload's pods, from its pod template) would be
sent: a summary of its routes with weights, timeouts and retries, its clusters
with connection limits and outlier detection, and endpoints; or, with -o yaml,
every resource in Envoy's own form.`,
		Example: `  kubectl weft render -f deploy/ --workload shop/Deployment/web
  kubectl weft render -f deploy/ --pod shop/web-0 -o yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(files) == 0 {
				return errors.New("render needs manifests: -f FILE|DIR (or -f - for stdin)")
			}
			if output != "summary" && output != "yaml" {
				return fmt.Errorf("--output=%q: want summary or yaml", output)
			}
			m, err := cli.ReadManifests(files, stdin)
			if err != nil {
				return err
			}
			r, err := cli.Render(m, pod, wl, translate.Options{})
			if err != nil {
				return err
			}
			return printRendered(stdout, output, r)
		},
	}
	cmd.Flags().StringSliceVarP(&files, "filename", "f", nil, "manifest file or directory (repeatable; - for stdin)")
	cmd.Flags().StringVar(&pod, "pod", "", "the pod, NAMESPACE/NAME, among the manifests")
	cmd.Flags().StringVar(&wl, "workload", "", "a workload, NAMESPACE/KIND/NAME (Deployment, StatefulSet, DaemonSet, ReplicaSet, Job), whose pod template stands for its pods")
	cmd.Flags().StringVarP(&output, "output", "o", "summary", "output format: summary or yaml")
	return cmd
}

// Version is the plugin's version, set at build time with -ldflags
// "-X github.com/weft-mesh/weft/internal/cli/command.Version=..."; it picks
// the injected images by default, as the controller's does.
var Version = "dev"

func newInject(stdin io.Reader, stdout io.Writer) *cobra.Command {
	var files []string
	cfg := inject.DefaultConfig()
	cfg.ProxyImage = "ghcr.io/weft-mesh/weft-proxy:" + Version
	cfg.InitImage = "ghcr.io/weft-mesh/weft-init:" + Version
	cfg.ProxyVersion = Version
	cmd := &cobra.Command{
		Use:   "inject -f FILE|DIR",
		Short: "Inject the sidecar into Pods and workload pod templates, offline",
		Long: `inject does to the Pods and the pod templates of Deployments, StatefulSets,
DaemonSets, ReplicaSets and Jobs what the injection webhook does at admission,
with the same code, for clusters that run without the webhook. It prints every
object of the manifests, the injected ones changed, and says on stderr what it
did to each. A pod is meshed by the weft.dev/inject annotation, or by its
namespace's weft.dev/inject=enabled label when the Namespace object is among
the manifests.`,
		Example: `  kubectl weft inject -f deploy/web.yaml | kubectl apply -f -`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(files) == 0 {
				return errors.New("inject needs manifests: -f FILE|DIR (or -f - for stdin)")
			}
			m, err := cli.ReadManifests(files, stdin)
			if err != nil {
				return err
			}
			res, err := cli.Inject(m, cfg)
			if err != nil {
				if inject.IsRejection(err) {
					fmt.Fprintln(cmd.ErrOrStderr(), "error:", err)
					return errFindings
				}
				return err
			}
			for _, n := range res.Notes {
				fmt.Fprintln(cmd.ErrOrStderr(), n)
			}
			for i, o := range res.Objects {
				b, err := yaml.Marshal(o.Object)
				if err != nil {
					return err
				}
				if i > 0 {
					fmt.Fprintln(stdout, "---")
				}
				if _, err := stdout.Write(b); err != nil {
					return err
				}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringSliceVarP(&files, "filename", "f", nil, "manifest file or directory (repeatable; - for stdin)")
	f.StringVar(&cfg.ProxyImage, "proxy-image", cfg.ProxyImage, "image of the Envoy sidecar (the controller's --proxy-image)")
	f.StringVar(&cfg.InitImage, "init-image", cfg.InitImage, "image of the traffic-capture init container (the controller's --init-image)")
	f.StringVar(&cfg.ProxyVersion, "proxy-version", cfg.ProxyVersion, "version recorded on injected pods")
	f.StringVar(&cfg.XDSAddress, "xds-address", cfg.XDSAddress, "host:port of the xDS Service the proxies dial")
	f.StringVar(&cfg.ControlPlaneNamespace, "control-plane-namespace", cfg.ControlPlaneNamespace, "namespace of the control plane; never injected")
	f.StringVar(&cfg.TrustDomain, "trust-domain", cfg.TrustDomain, "trust domain of the mesh's SPIFFE IDs")
	f.BoolVar(&cfg.NativeSidecars, "native-sidecars", cfg.NativeSidecars, "inject Envoy as a native sidecar (Kubernetes 1.29 and later)")
	return cmd
}

func newDiff(stdin io.Reader, stdout io.Writer) *cobra.Command {
	var base, head []string
	var output string
	cmd := &cobra.Command{
		Use:   "diff --base FILE|DIR --head FILE|DIR",
		Short: "What two revisions of the manifests change in each workload's proxy configuration, offline",
		Long: `diff renders every meshed workload and pod of two revisions of the manifests
(say, the target branch and a pull request) and prints, per workload, what
changes in what its proxy is sent: where each route sends and with which
weights, timeouts and retries, and each cluster's limits and outlier
detection, one line per change.`,
		Example: `  git worktree add /tmp/base main
  kubectl weft diff --base /tmp/base/deploy --head deploy`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(base) == 0 || len(head) == 0 {
				return errors.New("diff needs --base and --head manifests")
			}
			if output != "text" && output != "json" {
				return fmt.Errorf("--output=%q: want text or json", output)
			}
			b, err := cli.ReadManifests(base, stdin)
			if err != nil {
				return err
			}
			h, err := cli.ReadManifests(head, stdin)
			if err != nil {
				return err
			}
			changes, err := cli.Diff(b, h, translate.Options{})
			if err != nil {
				return err
			}
			if output == "json" {
				if changes == nil {
					changes = []cli.Change{}
				}
				out, err := json.MarshalIndent(changes, "", "  ")
				if err != nil {
					return err
				}
				_, err = fmt.Fprintln(stdout, string(out))
				return err
			}
			if len(changes) == 0 {
				_, err := fmt.Fprintln(stdout, "No change to any proxy's configuration.")
				return err
			}
			for _, c := range changes {
				fmt.Fprintln(stdout, c)
			}
			return nil
		},
	}
	cmd.Flags().StringSliceVar(&base, "base", nil, "manifests of the base revision (repeatable)")
	cmd.Flags().StringSliceVar(&head, "head", nil, "manifests of the new revision (repeatable)")
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")
	return cmd
}
