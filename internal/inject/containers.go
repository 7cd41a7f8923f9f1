package inject

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	meshv1alpha1 "github.com/weft-mesh/weft/api/v1alpha1"
	"github.com/weft-mesh/weft/internal/capture"
	"github.com/weft-mesh/weft/internal/identity"
)

// Timing of the proxy's lifecycle.
const (
	// startupWindow is how long a proxy may take to get its first config
	// before the kubelet restarts it (startupProbe period x threshold).
	startupPeriodSeconds    = 1
	startupFailureThreshold = 300
	// drainSeconds is how long Envoy takes to drain listeners; the preStop
	// hook waits at most this long for connections to close.
	drainSeconds = 10
	// waitReadyTimeout bounds the postStart hook of a non-native sidecar.
	waitReadyTimeout = "300s"
	// proxyConcurrency caps Envoy's worker threads; by default it starts one
	// per node CPU, which is wasteful for a sidecar on a large node.
	proxyConcurrency = 2
)

var (
	initResources = corev1.ResourceRequirements{
		Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("10m"), corev1.ResourceMemory: resource.MustParse("16Mi")},
		Limits:   corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("64Mi")},
	}
	// proxyDirSize leaves room for the bootstrap, the SDS file and the
	// weft-init executable.
	proxyDirSize = resource.MustParse("64Mi")
)

// mutateSidecar adds weft-init, weft-proxy and their volumes to pod.
func (in *Injector) mutateSidecar(pod *corev1.Pod, mode Mode, o overrides, w xdsNode) (*Status, []string, error) {
	cfg := in.cfg
	if err := checkFree(pod, ProxyVolumeName, IdentityVolumeName); err != nil {
		return nil, nil, err
	}
	bootJSON, err := spliceNode(envoyNode(cfg, w), envoyStats(w), in.staticBootstrap)
	if err != nil {
		return nil, nil, err
	}
	capCfg := capture.Config{
		InboundPort:          InboundPort,
		OutboundPort:         OutboundPort,
		ProxyUID:             uint32(cfg.ProxyUID),
		ExcludeInboundPorts:  o.excludeInboundPorts,
		ExcludeOutboundPorts: o.excludeOutboundPorts,
		ExcludeOutboundCIDRs: o.excludeOutboundCIDRs,
	}
	warnings := sidecarWarnings(pod, mode, cfg)

	native := mode == ModeNativeSidecar
	initC := initContainer(cfg, capCfg, w, bootJSON, in.sds)
	proxy := proxyContainer(cfg, o, native)
	status := &Status{Version: cfg.ProxyVersion, Mode: mode, Volumes: []string{ProxyVolumeName, IdentityVolumeName}}
	if native {
		pod.Spec.InitContainers = slices.Concat([]corev1.Container{initC, proxy}, pod.Spec.InitContainers)
		status.InitContainers = []string{InitContainerName, ProxyContainerName}
	} else {
		if len(pod.Spec.Containers) > 0 {
			if _, ok := pod.Annotations[AnnotationDefaultContainer]; !ok {
				// Keep kubectl logs/exec pointed at the app, not the proxy now in front of it.
				if pod.Annotations == nil {
					pod.Annotations = map[string]string{}
				}
				pod.Annotations[AnnotationDefaultContainer] = pod.Spec.Containers[0].Name
			}
		}
		pod.Spec.InitContainers = slices.Concat([]corev1.Container{initC}, pod.Spec.InitContainers)
		pod.Spec.Containers = slices.Concat([]corev1.Container{proxy}, pod.Spec.Containers)
		status.InitContainers = []string{InitContainerName}
		status.Containers = []string{ProxyContainerName}
	}
	pod.Spec.Volumes = append(pod.Spec.Volumes,
		corev1.Volume{Name: ProxyVolumeName, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{SizeLimit: &proxyDirSize}}},
		identityVolume(w),
	)
	return status, warnings, nil
}

func sidecarWarnings(pod *corev1.Pod, mode Mode, cfg Config) []string {
	var warnings []string
	if mode == ModeSidecar {
		if pod.Spec.RestartPolicy == corev1.RestartPolicyNever || pod.Spec.RestartPolicy == corev1.RestartPolicyOnFailure {
			warnings = append(warnings, fmt.Sprintf("the API server predates native sidecars (Kubernetes 1.29), so %s runs as a regular container and this pod (restartPolicy %s) will not complete while it runs", ProxyContainerName, pod.Spec.RestartPolicy))
		}
		if len(pod.Spec.InitContainers) > 0 {
			warnings = append(warnings, fmt.Sprintf("init containers run before %s starts (the API server predates native sidecars), so their outbound TCP connections fail; exclude their destinations or run them as uid %d", ProxyContainerName, cfg.ProxyUID))
		}
	}
	podUID := (*int64)(nil)
	if pod.Spec.SecurityContext != nil {
		podUID = pod.Spec.SecurityContext.RunAsUser
	}
	for _, c := range slices.Concat(pod.Spec.InitContainers, pod.Spec.Containers) {
		uid := podUID
		if c.SecurityContext != nil && c.SecurityContext.RunAsUser != nil {
			uid = c.SecurityContext.RunAsUser
		}
		if uid != nil && *uid == cfg.ProxyUID {
			warnings = append(warnings, fmt.Sprintf("container %s runs as uid %d, the proxy's uid: its traffic bypasses the proxy", c.Name, cfg.ProxyUID))
		}
		for _, p := range c.Ports {
			if p.ContainerPort >= int32(capture.ReservedPortFirst) && p.ContainerPort <= int32(capture.ReservedPortLast) {
				warnings = append(warnings, fmt.Sprintf("container %s port %d is in the proxy's reserved range %d-%d: inbound traffic to it is not captured", c.Name, p.ContainerPort, capture.ReservedPortFirst, capture.ReservedPortLast))
			}
		}
	}
	return warnings
}

// checkFree fails when the pod already uses one of the volume names Inject adds.
func checkFree(pod *corev1.Pod, volumes ...string) error {
	for _, v := range pod.Spec.Volumes {
		if slices.Contains(volumes, v.Name) {
			return fmt.Errorf("pod already has a volume named %s, which the mesh needs", v.Name)
		}
	}
	return nil
}

// identityVolume projects the workload's certificate and the namespace's
// trust bundle into one directory. The Secret's own ca.crt names only the CA
// that signed this workload, so during a root rotation a peer issued by the
// other root would be refused; the trust bundle ConfigMap holds every root in
// use, so ca.crt comes from there. Both sources are required: the kubelet
// holds the pod until the Secret is issued and the bundle is published (the
// identity reconciler publishes it only once it is non-empty), rather than
// starting a proxy that cannot authenticate anyone.
//
// One volume rather than two keeps a single directory for Envoy's
// watched_directory and the gRPC file watcher, and a single atomic swap of
// its ..data symlink whenever either source changes.
func identityVolume(w xdsNode) corev1.Volume {
	return corev1.Volume{
		Name: IdentityVolumeName,
		VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
			Sources: []corev1.VolumeProjection{
				{Secret: &corev1.SecretProjection{
					LocalObjectReference: corev1.LocalObjectReference{Name: identity.CertificateName(w.serviceAccount)},
					// Named items: the Secret's ca.crt must not compete with
					// the bundle's for the same path.
					Items: []corev1.KeyToPath{
						{Key: corev1.TLSCertKey, Path: CertificateFile},
						{Key: corev1.TLSPrivateKeyKey, Path: PrivateKeyFile},
					},
				}},
				{ConfigMap: &corev1.ConfigMapProjection{
					LocalObjectReference: corev1.LocalObjectReference{Name: identity.TrustBundleName},
					Items:                []corev1.KeyToPath{{Key: identity.TrustBundleKey, Path: CAFile}},
				}},
			},
			// Readable by the proxy's uid without an fsGroup on the pod,
			// which Inject does not touch. Only containers that mount the
			// volume can see it.
			DefaultMode: ptr.To[int32](0o444),
		}},
	}
}

func initContainer(cfg Config, capCfg capture.Config, w xdsNode, bootstrap, sds string) corev1.Container {
	args := slices.Concat(capCfg.Args(), []string{
		"--" + capture.FlagFileFromEnv + "=" + EnvProxyBootstrap + "=" + BootstrapPath,
		"--" + capture.FlagFileFromEnv + "=" + EnvProxySDS + "=" + SDSPath,
		"--" + capture.FlagCopySelf + "=" + InitBinaryPath,
	})
	return corev1.Container{
		Name:                     InitContainerName,
		Image:                    cfg.InitImage,
		ImagePullPolicy:          corev1.PullIfNotPresent,
		Args:                     args,
		Env:                      append(podNameEnv(w), corev1.EnvVar{Name: EnvProxyBootstrap, Value: bootstrap}, corev1.EnvVar{Name: EnvProxySDS, Value: sds}),
		Resources:                *initResources.DeepCopy(),
		VolumeMounts:             []corev1.VolumeMount{{Name: ProxyVolumeName, MountPath: ProxyConfigDir}},
		TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
		SecurityContext: &corev1.SecurityContext{
			// Installing nftables rules needs CAP_NET_ADMIN in the pod's
			// network namespace, and root to use it; nothing else is kept.
			RunAsUser:                ptr.To[int64](0),
			RunAsGroup:               ptr.To[int64](0),
			RunAsNonRoot:             ptr.To(false),
			Privileged:               ptr.To(false),
			AllowPrivilegeEscalation: ptr.To(false),
			ReadOnlyRootFilesystem:   ptr.To(true),
			Capabilities: &corev1.Capabilities{
				Add:  []corev1.Capability{"NET_ADMIN", "NET_RAW"},
				Drop: []corev1.Capability{"ALL"},
			},
			SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		},
	}
}

// podNameEnv defines $(WEFT_POD_NAME) when a bootstrap refers to it.
func podNameEnv(w xdsNode) []corev1.EnvVar {
	if !strings.Contains(w.nodeID, "$("+EnvPodName+")") {
		return nil
	}
	return []corev1.EnvVar{{
		Name:      EnvPodName,
		ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "metadata.name"}},
	}}
}

func proxyContainer(cfg Config, o overrides, native bool) corev1.Container {
	ready := &corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: ReadyPath, Port: intstr.FromInt32(ReadinessPort), Scheme: corev1.URISchemeHTTP}}
	c := corev1.Container{
		Name:            ProxyContainerName,
		Image:           o.image,
		ImagePullPolicy: corev1.PullIfNotPresent,
		Args: []string{
			"--config-path", BootstrapPath,
			"--log-level", o.logLevel,
			"--concurrency", strconv.Itoa(proxyConcurrency),
			"--drain-time-s", strconv.Itoa(drainSeconds),
			"--drain-strategy", "immediate",
			// Nothing restarts Envoy in place; the pod restarts the container.
			"--disable-hot-restart",
		},
		Ports: []corev1.ContainerPort{
			{Name: "weft-health", ContainerPort: ReadinessPort, Protocol: corev1.ProtocolTCP},
			{Name: "weft-metrics", ContainerPort: StatsPort, Protocol: corev1.ProtocolTCP},
		},
		Resources: o.resources,
		VolumeMounts: []corev1.VolumeMount{
			{Name: ProxyVolumeName, MountPath: ProxyConfigDir, ReadOnly: true},
			{Name: IdentityVolumeName, MountPath: IdentityDir, ReadOnly: true},
		},
		ReadinessProbe: &corev1.Probe{ProbeHandler: *ready, PeriodSeconds: 5, TimeoutSeconds: 1, FailureThreshold: 3, SuccessThreshold: 1},
		Lifecycle: &corev1.Lifecycle{
			// An exec hook, not httpGet: the kubelet sends httpGet hooks to
			// the pod IP and only as GET, while the admin endpoint listens on
			// 127.0.0.1 and drains only on POST. weft-init copied itself into
			// the proxy volume to serve as this client.
			PreStop: &corev1.LifecycleHandler{Exec: &corev1.ExecAction{Command: []string{
				InitBinaryPath, capture.CommandDrain,
				"--" + capture.FlagAdmin + "=127.0.0.1:" + strconv.Itoa(AdminPort),
				"--" + capture.FlagTimeout + "=" + strconv.Itoa(drainSeconds) + "s",
			}}},
		},
		TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
		SecurityContext: &corev1.SecurityContext{
			RunAsUser:                ptr.To(cfg.ProxyUID),
			RunAsGroup:               ptr.To(cfg.ProxyUID),
			RunAsNonRoot:             ptr.To(true),
			Privileged:               ptr.To(false),
			AllowPrivilegeEscalation: ptr.To(false),
			ReadOnlyRootFilesystem:   ptr.To(true),
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
			SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		},
	}
	if native {
		// Started before the app's init containers and kept running; the
		// kubelet starts the next container only once the startup probe
		// passes, so the app never runs without its proxy.
		c.RestartPolicy = ptr.To(corev1.ContainerRestartPolicyAlways)
		c.StartupProbe = &corev1.Probe{ProbeHandler: *ready, PeriodSeconds: startupPeriodSeconds, TimeoutSeconds: 1, FailureThreshold: startupFailureThreshold, SuccessThreshold: 1}
	} else {
		// The kubelet starts regular containers in order and does not start
		// the next one until this hook returns, so the app waits for a ready
		// proxy here instead.
		c.Lifecycle.PostStart = &corev1.LifecycleHandler{Exec: &corev1.ExecAction{Command: []string{
			InitBinaryPath, capture.CommandWaitReady,
			"--" + capture.FlagURL + "=http://127.0.0.1:" + strconv.Itoa(ReadinessPort) + ReadyPath,
			"--" + capture.FlagTimeout + "=" + waitReadyTimeout,
		}}}
	}
	return c
}

// mutateGRPCAgent gives every app container the gRPC xDS bootstrap and the
// workload identity. There is no proxy and no traffic capture.
func mutateGRPCAgent(pod *corev1.Pod, cfg Config, o overrides, w xdsNode) (*Status, []string, error) {
	if err := checkFree(pod, IdentityVolumeName); err != nil {
		return nil, nil, err
	}
	boot, err := grpcBootstrapJSON(cfg, w)
	if err != nil {
		return nil, nil, err
	}
	var warnings []string
	if len(o.set) > 0 {
		warnings = append(warnings, fmt.Sprintf("%s has no proxy, so %s have no effect", meshv1alpha1.InjectGRPCAgent, strings.Join(o.set, ", ")))
	}
	status := &Status{Version: cfg.ProxyVersion, Mode: ModeGRPCAgent, Volumes: []string{IdentityVolumeName}}
	for i := range pod.Spec.Containers {
		c := &pod.Spec.Containers[i]
		configured := false
		if slices.ContainsFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == EnvGRPCBootstrap || e.Name == EnvGRPCBootstrapConfig }) {
			warnings = append(warnings, fmt.Sprintf("container %s sets its own gRPC xDS bootstrap; it was left as is", c.Name))
		} else {
			c.Env = append(c.Env, podNameEnv(w)...)
			c.Env = append(c.Env, corev1.EnvVar{Name: EnvGRPCBootstrapConfig, Value: boot})
			configured = true
		}
		if slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool { return m.MountPath == IdentityDir }) {
			warnings = append(warnings, fmt.Sprintf("container %s already mounts something at %s; the workload identity was not mounted", c.Name, IdentityDir))
		} else {
			c.VolumeMounts = append(c.VolumeMounts, corev1.VolumeMount{Name: IdentityVolumeName, MountPath: IdentityDir, ReadOnly: true})
			configured = true
		}
		if configured {
			status.ConfiguredContainers = append(status.ConfiguredContainers, c.Name)
		}
	}
	pod.Spec.Volumes = append(pod.Spec.Volumes, identityVolume(w))
	return status, warnings, nil
}
