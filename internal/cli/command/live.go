package command

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	"github.com/spf13/cobra"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/duration"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/weft-mesh/weft/internal/cli"
	"github.com/weft-mesh/weft/internal/debugapi"
)

// kube is the connection to a cluster, from kubectl's own flags
// (--kubeconfig, --context, -n, ...).
type kube struct {
	flags *genericclioptions.ConfigFlags
}

func (k *kube) clients() (client.Client, kubernetes.Interface, error) {
	cfg, err := k.flags.ToRESTConfig()
	if err != nil {
		return nil, nil, err
	}
	s := cli.Scheme()
	for _, add := range []func(*runtime.Scheme) error{cmapi.AddToScheme, apiextensionsv1.AddToScheme} {
		if err := add(s); err != nil {
			return nil, nil, err
		}
	}
	c, err := client.New(cfg, client.Options{Scheme: s})
	if err != nil {
		return nil, nil, err
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, nil, err
	}
	return c, cs, nil
}

// namespace is -n, else the kubeconfig context's namespace; explicit says
// -n was given.
func (k *kube) namespace() (ns string, explicit bool, err error) {
	return k.flags.ToRawKubeConfigLoader().Namespace()
}

func (k *kube) debugAPI() (cli.DebugAPI, error) {
	_, cs, err := k.clients()
	if err != nil {
		return cli.DebugAPI{}, err
	}
	return cli.DebugAPI{REST: cs.Discovery().RESTClient()}, nil
}

// podArg reads NAME (in the namespace of -n or the context) or
// NAMESPACE/NAME.
func (k *kube) podArg(arg string) (ns, name string, err error) {
	if before, after, ok := strings.Cut(arg, "/"); ok {
		if before == "" || after == "" || strings.Contains(after, "/") {
			return "", "", fmt.Errorf("%q: want POD or NAMESPACE/POD", arg)
		}
		return before, after, nil
	}
	ns, _, err = k.namespace()
	return ns, arg, err
}

func newProxyStatus(k *kube, stdout io.Writer) *cobra.Command {
	var output string
	var all bool
	cmd := &cobra.Command{
		Use:   "proxy-status [POD]",
		Short: "Which proxies are connected to the control plane, and whether they took their configuration",
		Long: `proxy-status lists every Envoy sidecar and proxyless gRPC client connected to
any controller replica: its kind and agent, the replica, and per resource type
(listeners, routes, clusters, endpoints) whether the proxy acknowledged what it
was sent (SYNCED), has not answered yet (STALE), was sent nothing (NOT SENT)
or rejected it (NACKED). With a pod, it shows that proxy in full, with the
rejection's message and the resources it refused.

It reads the debug.weft.dev API, which the API server forwards to the
controller: you need RBAC to list proxies.debug.weft.dev (the ClusterRole
weft-proxy-reader). It exits 1 when a proxy rejected its configuration or a
replica did not answer.`,
		Example: `  kubectl weft proxy-status -A
  kubectl weft proxy-status -n shop web-7d9f-x2x4k`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			api, err := k.debugAPI()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			if len(args) == 1 {
				ns, name, err := k.podArg(args[0])
				if err != nil {
					return err
				}
				p, err := api.Proxy(ctx, ns, name)
				if err != nil {
					return err
				}
				if err := printObject(stdout, output, p, func(w io.Writer) error { return printProxy(w, p) }); err != nil {
					return err
				}
				if p.Status.Nack != nil {
					return errFindings
				}
				return nil
			}
			ns := ""
			if !all {
				if ns, _, err = k.namespace(); err != nil {
					return err
				}
			}
			l, err := api.Proxies(ctx, ns)
			if err != nil {
				return err
			}
			if err := printObject(stdout, output, l, func(w io.Writer) error { return printProxies(w, l, all) }); err != nil {
				return err
			}
			for _, r := range l.Replicas {
				if r.Error != "" {
					fmt.Fprintf(cmd.ErrOrStderr(), "replica %s did not answer, its proxies are missing: %s\n", r.Name, r.Error)
				}
			}
			for _, p := range l.Items {
				if p.Status.Nack != nil {
					return errFindings
				}
			}
			for _, r := range l.Replicas {
				if r.Error != "" {
					return errFindings
				}
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table, yaml or json")
	cmd.Flags().BoolVarP(&all, "all-namespaces", "A", false, "proxies of every namespace")
	return cmd
}

// printObject prints v as YAML or JSON, or as a table by table.
func printObject(w io.Writer, output string, v any, table func(io.Writer) error) error {
	switch output {
	case "json":
		b, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			return err
		}
		_, err = fmt.Fprintln(w, string(b))
		return err
	case "yaml":
		b, err := yaml.Marshal(v)
		if err != nil {
			return err
		}
		_, err = w.Write(b)
		return err
	}
	return table(w)
}

var resourceColumns = []struct{ header, typ string }{
	{"LISTENERS", "Listener"}, {"ROUTES", "RouteConfiguration"}, {"CLUSTERS", "Cluster"}, {"ENDPOINTS", "ClusterLoadAssignment"},
}

// typeState is one resource type's state on a proxy.
func typeState(p *debugapi.Proxy, typ string) string {
	if n := p.Status.Nack; n != nil && n.Type == typ {
		return "NACKED"
	}
	for _, r := range p.Status.Resources {
		if r.Type != typ {
			continue
		}
		switch r.Sent {
		case "":
			return "NOT SENT"
		case r.Acked:
			return "SYNCED"
		}
		return "STALE"
	}
	return "-"
}

func proxyState(p *debugapi.Proxy) string {
	switch {
	case p.Status.Nack != nil:
		return "Rejected"
	case p.Status.Synced:
		return "Synced"
	}
	return "Stale"
}

func printProxies(w io.Writer, l *debugapi.ProxyList, all bool) error {
	if len(l.Items) == 0 {
		_, err := fmt.Fprintln(w, "No proxies connected.")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	if all {
		fmt.Fprint(tw, "NAMESPACE\t")
	}
	fmt.Fprint(tw, "NAME\tKIND\tSTATUS")
	for _, c := range resourceColumns {
		fmt.Fprint(tw, "\t"+c.header)
	}
	fmt.Fprintln(tw, "\tREPLICA\tAGENT\tAGE")
	for i := range l.Items {
		p := &l.Items[i]
		if all {
			fmt.Fprint(tw, p.Namespace+"\t")
		}
		fmt.Fprintf(tw, "%s\t%s\t%s", p.Name, p.Status.Kind, proxyState(p))
		for _, c := range resourceColumns {
			fmt.Fprint(tw, "\t"+typeState(p, c.typ))
		}
		fmt.Fprintf(tw, "\t%s\t%s\t%s\n", p.Status.Replica, dash(p.Status.Agent), age(p.CreationTimestamp.Time))
	}
	return tw.Flush()
}

func age(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return duration.HumanDuration(time.Since(t))
}

func printProxy(w io.Writer, p *debugapi.Proxy) error {
	fmt.Fprintf(w, "%s/%s: %s %s, connected to %s for %s\n", p.Namespace, p.Name, p.Status.Kind, dash(p.Status.Agent), p.Status.Replica, age(p.CreationTimestamp.Time))
	if p.Status.Identity != "" {
		fmt.Fprintf(w, "Identity: %s\n", p.Status.Identity)
	}
	fmt.Fprintf(w, "Status:   %s\n", proxyState(p))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TYPE\tSTATE\tSENT\tACKED")
	for _, r := range p.Status.Resources {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.Type, typeState(p, r.Type), dash(r.Sent), dash(r.Acked))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if n := p.Status.Nack; n != nil {
		fmt.Fprintf(w, "\nRejected %s version %s %s ago:\n  %s\n", n.Type, dash(n.Version), age(n.At.Time), oneLine(n.Message))
		if len(n.Resources) > 0 {
			fmt.Fprintf(w, "Resources in the rejected response:\n  %s\n", strings.Join(n.Resources, "\n  "))
		}
	}
	return nil
}

func newProxyConfig(k *kube, stdout io.Writer) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "proxy-config POD",
		Short: "The configuration the control plane is serving a proxy now",
		Long: `proxy-config shows what the controller replica a proxy is connected to is
serving it now: a summary of its routes with weights, timeouts and retries,
its clusters with connection limits and outlier detection, and endpoints (the
same summary render prints for manifests), or every resource in Envoy's JSON
form with -o yaml or -o json.

It reads proxies/config in the debug.weft.dev API, through the API server
(RBAC: get proxies/config, in the ClusterRole weft-proxy-reader).`,
		Example: `  kubectl weft proxy-config -n shop web-7d9f-x2x4k
  kubectl weft proxy-config shop/web-7d9f-x2x4k -o yaml`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if output != "summary" && output != "yaml" && output != "json" {
				return fmt.Errorf("--output=%q: want summary, yaml or json", output)
			}
			ns, name, err := k.podArg(args[0])
			if err != nil {
				return err
			}
			api, err := k.debugAPI()
			if err != nil {
				return err
			}
			cfg, err := api.Config(cmd.Context(), ns, name)
			if err != nil {
				return err
			}
			if output == "json" {
				return printObject(stdout, "json", cfg, nil)
			}
			r, err := cli.FromProxyConfig(cfg)
			if err != nil {
				return err
			}
			if output != "yaml" {
				fmt.Fprintf(stdout, "Served by %s now:\n", cfg.Replica)
			}
			return printRendered(stdout, output, r)
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "summary", "output format: summary, yaml or json")
	return cmd
}

func newCheck(k *kube, stdout io.Writer) *cobra.Command {
	opts := cli.DefaultCheckOptions()
	var output string
	cmd := &cobra.Command{
		Use:   "check [--pre]",
		Short: "Check that the cluster can run Weft, and that Weft runs well",
		Long: `check looks at what Weft needs and does, and says for each check that fails
what to do about it.

Before an install (--pre): the Kubernetes version, the Gateway API and
cert-manager CRDs, and the issuer each MeshIdentity names.

After it: the controller's Deployment, its xDS serving certificate (valid, not
near expiry), the proxy status API, the injection webhook (the API server has
a pod injected, dry run), every pod that should be meshed has a sidecar on the
current proxy, every MeshIdentity is Ready, and every connected proxy took its
configuration.

It exits 1 when a check fails; warnings do not fail it.`,
		Example: `  kubectl weft check --pre
  kubectl weft check -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			c, cs, err := k.clients()
			if err != nil {
				return err
			}
			if !cmd.Flags().Changed("dry-run-namespace") {
				if ns, explicit, err := k.namespace(); err == nil && explicit {
					opts.DryRunNamespace = ns
				}
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 2*time.Minute)
			defer cancel()
			res := cli.Check(ctx, cli.CheckCluster{Client: c, ServerVersion: cs.Discovery().ServerVersion, Debug: cli.DebugAPI{REST: cs.Discovery().RESTClient()}}, opts)
			if err := printObject(stdout, output, res, func(w io.Writer) error { return printChecks(w, res) }); err != nil {
				return err
			}
			if cli.Failed(res) > 0 {
				return errFindings
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.BoolVar(&opts.Pre, "pre", false, "only what an install needs (before installing Weft)")
	f.StringVar(&opts.Namespace, "control-plane-namespace", opts.Namespace, "namespace Weft is installed in")
	f.StringVar(&opts.DryRunNamespace, "dry-run-namespace", opts.DryRunNamespace, "namespace where the webhook check has a pod injected, dry run (default: -n, else default)")
	f.StringVarP(&output, "output", "o", "table", "output format: table, yaml or json")
	return cmd
}

func printChecks(w io.Writer, res []cli.CheckResult) error {
	marks := map[string]string{cli.CheckOK: "✔", cli.CheckWarning: "!", cli.CheckFailed: "✘"}
	for _, r := range res {
		fmt.Fprintf(w, "%s %s: %s\n", marks[r.Status], r.Name, oneLine(r.Detail))
		if r.Fix != "" {
			fmt.Fprintf(w, "    fix: %s\n", oneLine(r.Fix))
		}
	}
	failed, warned := cli.Failed(res), 0
	for _, r := range res {
		if r.Status == cli.CheckWarning {
			warned++
		}
	}
	var err error
	if failed == 0 {
		_, err = fmt.Fprintf(w, "\nAll %d checks passed (%d warnings).\n", len(res), warned)
	} else {
		_, err = fmt.Fprintf(w, "\n%d of %d checks failed (%d warnings).\n", failed, len(res), warned)
	}
	return err
}

// printRendered writes a proxy's configuration as YAML (-o yaml) or as
// the summary render and proxy-config share.
func printRendered(w io.Writer, output string, r *cli.Rendered) error {
	if output == "yaml" {
		b, err := r.YAML()
		if err != nil {
			return err
		}
		_, err = w.Write(b)
		return err
	}
	_, err := io.WriteString(w, r.Summary())
	return err
}
