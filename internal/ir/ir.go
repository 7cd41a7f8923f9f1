package ir

import (
	"errors"
	"fmt"
	"regexp/syntax"
	"slices"
	"time"
)

// Duration is a time.Duration that reads and writes as "250ms" in JSON and
// YAML, so golden files stay readable.
type Duration time.Duration

// D converts a Duration to a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// MarshalText writes the duration as a Go duration string; JSON and YAML
// quote it.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// UnmarshalText reads a Go duration string.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("duration must be a string such as \"250ms\": %w", err)
	}
	*d = Duration(v)
	return nil
}

// ObjectRef names the Kubernetes object a node of the model came from.
type ObjectRef struct {
	Group     string `json:"group,omitempty"`
	Kind      string `json:"kind"`
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name"`
}

func (r ObjectRef) String() string {
	if r.Namespace == "" {
		return r.Kind + "/" + r.Name
	}
	return r.Kind + "/" + r.Namespace + "/" + r.Name
}

// Protocol is how a Service port's traffic is handled.
type Protocol string

// Protocols. HTTP2 and GRPC both use HTTP/2 to the upstream; GRPC also makes
// timeouts apply to the whole stream.
const (
	ProtocolHTTP  Protocol = "HTTP"
	ProtocolHTTP2 Protocol = "HTTP2"
	ProtocolGRPC  Protocol = "GRPC"
	ProtocolTCP   Protocol = "TCP"
)

// IsHTTP says whether the port is routed by the HTTP connection manager.
func (p Protocol) IsHTTP() bool { return p == ProtocolHTTP || p == ProtocolHTTP2 || p == ProtocolGRPC }

// MTLSMode is the inbound TLS mode of a namespace.
type MTLSMode string

// mTLS modes. Disabled means no MeshIdentity selects the namespace, so its
// workloads have no certificate and talk plaintext.
const (
	MTLSDisabled   MTLSMode = "Disabled"
	MTLSPermissive MTLSMode = "Permissive"
	MTLSStrict     MTLSMode = "Strict"
)

// Mesh is everything the translator needs, for every proxy.
type Mesh struct {
	// ClusterDomain is the DNS suffix of Services, normally cluster.local.
	ClusterDomain string `json:"clusterDomain"`
	// Namespaces are the namespaces with mesh settings, sorted by name.
	Namespaces []*Namespace `json:"namespaces,omitempty"`
	// Services are sorted by namespace, then name.
	Services []*Service `json:"services,omitempty"`
	// ProxyGroups are the sets of proxies that get identical configuration,
	// sorted by key.
	ProxyGroups []*ProxyGroup `json:"proxyGroups,omitempty"`
}

// Namespace carries a namespace's identity settings.
type Namespace struct {
	Name string `json:"name"`
	// TrustDomain is the SPIFFE trust domain of its workloads ("" when no
	// MeshIdentity selects the namespace).
	TrustDomain string   `json:"trustDomain,omitempty"`
	MTLS        MTLSMode `json:"mtls"`
	// Identity is the MeshIdentity that selects the namespace, if any.
	Identity *ObjectRef `json:"identity,omitempty"`
}

// Service is a Kubernetes Service as the mesh sees it.
type Service struct {
	Source    ObjectRef `json:"source"`
	Namespace string    `json:"namespace"`
	Name      string    `json:"name"`
	// Hostname is <name>.<namespace>.svc.<cluster domain>.
	Hostname string `json:"hostname"`
	// VIPs are the cluster IPs; empty for a headless Service.
	VIPs []string `json:"vips,omitempty"`
	// Ports are sorted by port number.
	Ports        []*Port      `json:"ports"`
	LoadBalancer LoadBalancer `json:"loadBalancer"`
	// Identities are the SPIFFE IDs of the workloads behind the Service,
	// sorted; clients check the server certificate against them. Empty when
	// the Service's namespace has no mesh identity.
	Identities []string `json:"identities,omitempty"`
	// MTLS is the mode of the Service's namespace: whether clients must
	// originate mTLS to it.
	MTLS MTLSMode `json:"mtls"`
	// AccessPolicies protect the Service, Deny policies first, then by
	// namespace/name.
	AccessPolicies []*AccessPolicy `json:"accessPolicies,omitempty"`
	// ExportTo are the namespaces whose proxies are sent the Service,
	// sorted; nil means every namespace, and ExportNowhere alone none.
	ExportTo []string `json:"exportTo,omitempty"`
}

// ExportNowhere is the ExportTo of a Service exported to no namespace.
const ExportNowhere = "~"

// ExportedTo says whether proxies in namespace ns are sent the Service.
func (s *Service) ExportedTo(ns string) bool {
	if s.ExportTo == nil {
		return true
	}
	_, ok := slices.BinarySearch(s.ExportTo, ns)
	return ok
}

// Key is namespace/name.
func (s *Service) Key() string { return s.Namespace + "/" + s.Name }

// Port is one port of a Service with everything a client needs to call it.
type Port struct {
	Name     string   `json:"name,omitempty"`
	Port     int32    `json:"port"`
	Protocol Protocol `json:"protocol"`
	// Cluster is the name of the upstream cluster for this Service port.
	Cluster string `json:"cluster"`
	// Endpoints are the ready and draining endpoints, sorted by address and port.
	Endpoints []Endpoint `json:"endpoints,omitempty"`
	// CircuitBreaker limits load on this port, if a CircuitBreaker targets it.
	CircuitBreaker *CircuitBreaker `json:"circuitBreaker,omitempty"`
	// RetryBudget caps concurrent retries to this port (from a RetryPolicy).
	RetryBudget *RetryBudget `json:"retryBudget,omitempty"`
	// Routes apply to every client (producer routes, TrafficSplits, and the
	// default route), in match order. HTTP protocols only.
	Routes []*Route `json:"routes,omitempty"`
	// ConsumerRoutes replace Routes for clients in one namespace (routes
	// declared in the client's namespace), sorted by namespace.
	ConsumerRoutes []*ConsumerRoutes `json:"consumerRoutes,omitempty"`
}

// RoutesFor is the route list clients in namespace ns use.
func (p *Port) RoutesFor(ns string) []*Route {
	for _, c := range p.ConsumerRoutes {
		if c.Namespace == ns {
			return c.Routes
		}
	}
	return p.Routes
}

// ConsumerRoutes are the routes that clients of one namespace see.
type ConsumerRoutes struct {
	Namespace string   `json:"namespace"`
	Routes    []*Route `json:"routes"`
}

// Health of an endpoint.
type Health string

// Endpoint health: Healthy endpoints take new requests; Draining endpoints
// (terminating but still serving) take none and finish what they have.
const (
	HealthHealthy  Health = "Healthy"
	HealthDraining Health = "Draining"
)

// Endpoint is one address:port behind a Service port.
type Endpoint struct {
	Address string `json:"address"`
	Port    int32  `json:"port"`
	Health  Health `json:"health"`
	Zone    string `json:"zone,omitempty"`
	// Pod is namespace/name of the backing pod, when known.
	Pod string `json:"pod,omitempty"`
}

// LBPolicy is a load-balancing algorithm.
type LBPolicy string

// Load-balancing policies, chosen per Service by the weft.dev/load-balancer
// annotation. LeastRequest is the default.
const (
	LBLeastRequest LBPolicy = "LeastRequest"
	LBRoundRobin   LBPolicy = "RoundRobin"
	LBRingHash     LBPolicy = "RingHash"
	// LBWeightedRoundRobin weighs endpoints by the load they report
	// (ORCA): queries per second over utilisation.
	LBWeightedRoundRobin LBPolicy = "WeightedRoundRobin"
)

// LoadBalancer is how clients pick an endpoint.
type LoadBalancer struct {
	Policy LBPolicy `json:"policy"`
	// HashOn says what consistent hashing keys on; RingHash only.
	HashOn *HashOn `json:"hashOn,omitempty"`
}

// HashOn is the consistent-hash key: exactly one field is set.
type HashOn struct {
	Header    string   `json:"header,omitempty"`
	Cookie    string   `json:"cookie,omitempty"`
	CookieTTL Duration `json:"cookieTTL,omitempty"`
	SourceIP  bool     `json:"sourceIP,omitempty"`
}

// Route is one routing rule of a Service port.
type Route struct {
	// Name is unique within the port's route list.
	Name   string    `json:"name"`
	Source ObjectRef `json:"source"`
	// Matches are OR'd; none means every request.
	Matches []Match `json:"matches,omitempty"`

	// Exactly one of Backends, Redirect or DirectResponse is set.
	Backends       []Backend       `json:"backends,omitempty"`
	Redirect       *Redirect       `json:"redirect,omitempty"`
	DirectResponse *DirectResponse `json:"directResponse,omitempty"`

	RequestHeaders  *HeaderModifier `json:"requestHeaders,omitempty"`
	ResponseHeaders *HeaderModifier `json:"responseHeaders,omitempty"`
	Rewrite         *Rewrite        `json:"rewrite,omitempty"`
	Mirrors         []Mirror        `json:"mirrors,omitempty"`

	// Timeout bounds the whole request (for gRPC, the whole stream).
	Timeout *Duration `json:"timeout,omitempty"`
	// BackendTimeout bounds each request to a backend: every try when
	// the route retries, else the request itself (HTTPRoute
	// timeouts.backendRequest).
	BackendTimeout *Duration `json:"backendTimeout,omitempty"`
	// Retry is the retry policy of the route, if any.
	Retry *Retry `json:"retry,omitempty"`
	// Fault is injected into the route's requests on the caller's side.
	Fault *Fault `json:"fault,omitempty"`
}

// Fault delays or fails a share of a route's requests.
type Fault struct {
	Source ObjectRef `json:"source"`
	// Rule says the route rule named it in an ExtensionRef filter; a
	// policy on the route or its Service does not replace it.
	Rule  bool        `json:"rule,omitempty"`
	Delay *FaultDelay `json:"delay,omitempty"`
	Abort *FaultAbort `json:"abort,omitempty"`
	// Headers limit the faults to requests with these exact header
	// values; names are lower case, sorted.
	Headers []Header `json:"headers,omitempty"`
}

// FaultDelay holds requests back.
type FaultDelay struct {
	Fixed   Duration `json:"fixed"`
	Percent uint32   `json:"percent"`
}

// FaultAbort fails requests with an HTTP status, or a gRPC status when
// GRPCStatus is set.
type FaultAbort struct {
	HTTPStatus uint32  `json:"httpStatus,omitempty"`
	GRPCStatus *uint32 `json:"grpcStatus,omitempty"`
	Percent    uint32  `json:"percent"`
}

// PathMatchType is how a path is compared.
type PathMatchType string

// Path match types.
const (
	PathExact  PathMatchType = "Exact"
	PathPrefix PathMatchType = "PathPrefix"
	PathRegex  PathMatchType = "RegularExpression"
)

// StringMatchType is how a header or query value is compared.
type StringMatchType string

// String match types.
const (
	MatchExact StringMatchType = "Exact"
	MatchRegex StringMatchType = "RegularExpression"
)

// Match is one set of request conditions, all of which must hold.
type Match struct {
	Path        *PathMatch    `json:"path,omitempty"`
	Headers     []StringMatch `json:"headers,omitempty"`
	QueryParams []StringMatch `json:"queryParams,omitempty"`
	Method      string        `json:"method,omitempty"`
}

// PathMatch matches the request path.
type PathMatch struct {
	Type  PathMatchType `json:"type"`
	Value string        `json:"value"`
}

// StringMatch matches a named header or query parameter.
type StringMatch struct {
	Name  string          `json:"name"`
	Type  StringMatchType `json:"type"`
	Value string          `json:"value"`
}

// Backend is a weighted upstream cluster.
type Backend struct {
	// Cluster is the upstream cluster's name (a Port.Cluster).
	Cluster string `json:"cluster"`
	Weight  uint32 `json:"weight"`
	// Service is the backend Service, for status and debugging.
	Service ObjectRef `json:"service"`
	Port    int32     `json:"port"`
}

// Redirect answers with an HTTP redirect.
type Redirect struct {
	Scheme     string       `json:"scheme,omitempty"`
	Hostname   string       `json:"hostname,omitempty"`
	Port       int32        `json:"port,omitempty"`
	Path       *PathRewrite `json:"path,omitempty"`
	StatusCode int          `json:"statusCode"`
}

// DirectResponse answers without calling a backend, e.g. 500 when every
// backend of a route is invalid, as the Gateway API requires.
type DirectResponse struct {
	Status int    `json:"status"`
	Body   string `json:"body,omitempty"`
}

// HeaderModifier adds, sets and removes headers.
type HeaderModifier struct {
	Set    []Header `json:"set,omitempty"`
	Add    []Header `json:"add,omitempty"`
	Remove []string `json:"remove,omitempty"`
}

// Header is a name and value.
type Header struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// Rewrite changes the request's host or path before it is sent on.
type Rewrite struct {
	Hostname string       `json:"hostname,omitempty"`
	Path     *PathRewrite `json:"path,omitempty"`
}

// PathRewrite replaces the full path or the matched prefix.
type PathRewrite struct {
	// ReplaceFullPath replaces the whole path.
	ReplaceFullPath string `json:"replaceFullPath,omitempty"`
	// ReplacePrefixMatch replaces the part matched by a PathPrefix match.
	ReplacePrefixMatch *string `json:"replacePrefixMatch,omitempty"`
}

// Mirror sends a copy of a share of requests to another cluster.
type Mirror struct {
	Cluster string `json:"cluster"`
	// Percent of requests mirrored, 0-100.
	Percent float64 `json:"percent"`
}

// Retry is a route's retry policy.
type Retry struct {
	Source   ObjectRef `json:"source"`
	Attempts uint32    `json:"attempts"`
	// PerTryTimeout bounds each try; 0 means unset.
	PerTryTimeout Duration `json:"perTryTimeout,omitempty"`
	// RetryOn are Envoy retry_on conditions, sorted.
	RetryOn              []string `json:"retryOn"`
	RetriableStatusCodes []uint32 `json:"retriableStatusCodes,omitempty"`
	BaseInterval         Duration `json:"baseInterval,omitempty"`
	MaxInterval          Duration `json:"maxInterval,omitempty"`
	// NonIdempotent allows retries of POST, PATCH and CONNECT.
	NonIdempotent bool `json:"nonIdempotent,omitempty"`
}

// RetryBudget caps concurrent retries to a share of active requests.
type RetryBudget struct {
	Source              ObjectRef `json:"source"`
	Percent             float64   `json:"percent"`
	MinRetryConcurrency uint32    `json:"minRetryConcurrency"`
}

// CircuitBreaker limits connections and requests to a Service port.
type CircuitBreaker struct {
	Source             ObjectRef         `json:"source"`
	MaxConnections     *uint32           `json:"maxConnections,omitempty"`
	MaxPendingRequests *uint32           `json:"maxPendingRequests,omitempty"`
	MaxRequests        *uint32           `json:"maxRequests,omitempty"`
	MaxRetries         *uint32           `json:"maxRetries,omitempty"`
	Outlier            *OutlierDetection `json:"outlierDetection,omitempty"`
	// ConnectTimeout and IdleTimeout are 0 when unset.
	ConnectTimeout Duration `json:"connectTimeout,omitempty"`
	IdleTimeout    Duration `json:"idleTimeout,omitempty"`
}

// OutlierDetection ejects failing endpoints.
type OutlierDetection struct {
	Consecutive5xx     *uint32            `json:"consecutive5xx,omitempty"`
	ConsecutiveGateway *uint32            `json:"consecutiveGateway,omitempty"`
	FailurePercentage  *FailurePercentage `json:"failurePercentage,omitempty"`
	Interval           Duration           `json:"interval"`
	BaseEjectionTime   Duration           `json:"baseEjectionTime"`
	MaxEjectionPercent uint32             `json:"maxEjectionPercent"`
}

// FailurePercentage is the failure-percentage detector.
type FailurePercentage struct {
	Threshold     uint32 `json:"threshold"`
	MinimumHosts  uint32 `json:"minimumHosts"`
	RequestVolume uint32 `json:"requestVolume"`
}

// AccessAction is Allow or Deny.
type AccessAction string

// Access actions.
const (
	AccessAllow AccessAction = "Allow"
	AccessDeny  AccessAction = "Deny"
)

// AccessPolicy is an RBAC policy on a Service's inbound traffic.
type AccessPolicy struct {
	Source ObjectRef    `json:"source"`
	Action AccessAction `json:"action"`
	Rules  []AccessRule `json:"rules"`
}

// AccessRule matches when the caller matches one of Principals (or
// Principals is empty) and the request matches To (or To is empty).
type AccessRule struct {
	Principals []Principal `json:"principals,omitempty"`
	// Ports are the target (container) ports.
	Ports   []uint32      `json:"ports,omitempty"`
	Methods []string      `json:"methods,omitempty"`
	Paths   []PathPattern `json:"paths,omitempty"`
}

// Principal is a caller's SPIFFE ID, exact or by prefix (a whole namespace).
type Principal struct {
	Exact  string `json:"exact,omitempty"`
	Prefix string `json:"prefix,omitempty"`
}

// PathPattern is an exact path or a prefix.
type PathPattern struct {
	Exact  string `json:"exact,omitempty"`
	Prefix string `json:"prefix,omitempty"`
}

// ProxyGroup is a set of proxies (pods) that get identical configuration:
// same namespace, service account, inbound ports and policies.
type ProxyGroup struct {
	// Key identifies the group; stable for equal inputs.
	Key            string `json:"key"`
	Namespace      string `json:"namespace"`
	ServiceAccount string `json:"serviceAccount"`
	// Identity is the group's SPIFFE ID ("" without mesh identity).
	Identity string   `json:"identity,omitempty"`
	MTLS     MTLSMode `json:"mtls"`
	// Inbound are the ports the workload serves, sorted by port.
	Inbound []*InboundPort `json:"inbound,omitempty"`
	// Members are the node IDs (<pod>.<namespace>) of the group, sorted.
	Members []string `json:"members,omitempty"`
}

// InboundPort is a port the workload listens on for one or more Services.
type InboundPort struct {
	// Port is the container port the application listens on.
	Port     int32    `json:"port"`
	Protocol Protocol `json:"protocol"`
	// Services are the Services that send traffic to this port, sorted.
	Services []ObjectRef `json:"services"`
	// AccessPolicies are those of every such Service, Deny first.
	AccessPolicies []*AccessPolicy `json:"accessPolicies,omitempty"`
	// RateLimit is the first such Service's (by namespace/name) that has
	// one.
	RateLimit *RateLimit `json:"rateLimit,omitempty"`
}

// RateLimit is a Service's local rate limit: every serving proxy keeps its
// own token buckets.
type RateLimit struct {
	Source ObjectRef `json:"source"`
	// Limit is shared by every request.
	Limit *TokenBucket `json:"limit,omitempty"`
	// PerCaller is each caller identity's own.
	PerCaller *TokenBucket `json:"perCaller,omitempty"`
}

// TokenBucket allows Requests per Interval, with Burst saved at most.
type TokenBucket struct {
	Requests uint32   `json:"requests"`
	Interval Duration `json:"interval"`
	Burst    uint32   `json:"burst"`
}

// ClusterName is the upstream cluster name of a Service port.
func ClusterName(hostname string, port int32) string {
	return fmt.Sprintf("outbound|%d||%s", port, hostname)
}

// RouteConfigName is the RDS route configuration of a Service port, shared
// by Envoy and proxyless gRPC clients. For consumer routes, the client
// namespace is appended.
func RouteConfigName(hostname string, port int32) string {
	return fmt.Sprintf("%s:%d", hostname, port)
}

// InboundClusterName is the cluster that forwards inbound traffic to the
// application on the given port.
func InboundClusterName(port int32) string {
	return fmt.Sprintf("inbound|%d", port)
}

// CheckRegex says why Envoy's and grpc-go's regular expression engine
// (RE2) would refuse re, or returns nil. Go's regexp/syntax parses the same
// RE2 dialect, so look-around and back-references fail here as they would
// in the proxy.
func CheckRegex(re string) error {
	if re == "" {
		return errors.New("the regular expression is empty")
	}
	if _, err := syntax.Parse(re, syntax.Perl); err != nil {
		return fmt.Errorf("not an RE2 regular expression: %w", err)
	}
	return nil
}
