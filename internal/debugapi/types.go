package debugapi

import (
	"encoding/json"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The API group the controller serves through the Kubernetes API
// aggregation layer.
const (
	Group    = "debug.weft.dev"
	Version  = "v1alpha1"
	Resource = "proxies"
	// ConfigSubresource is a proxy's live configuration.
	ConfigSubresource = "config"
)

// GroupVersion is Group/Version.
var GroupVersion = Group + "/" + Version

// NotConnected is in the message of a get for a proxy that no replica has.
const NotConnected = "is not connected to the control plane"

// Proxy kinds.
const (
	KindEnvoy     = "Envoy"
	KindProxyless = "Proxyless"
)

// Proxy is one proxy connected to a controller replica: an Envoy sidecar or
// a proxyless gRPC client. Its name and namespace are its pod's.
type Proxy struct {
	metav1.TypeMeta `json:",inline"`
	// CreationTimestamp is when the proxy's stream opened.
	metav1.ObjectMeta `json:"metadata"`
	Status            ProxyStatus `json:"status"`
}

// ProxyStatus is what the controller knows of a proxy.
type ProxyStatus struct {
	// Node is the proxy's xDS node ID, <pod>.<namespace>.
	Node string `json:"node"`
	// Kind is Envoy or Proxyless.
	Kind string `json:"kind"`
	// Replica is the controller replica the proxy is connected to.
	Replica string `json:"replica"`
	// Agent is the proxy's user agent and version.
	Agent string `json:"agent,omitempty"`
	// Identity is the SPIFFE ID of the proxy's client certificate.
	Identity string `json:"identity,omitempty"`
	// Streams is the number of open xDS streams.
	Streams int `json:"streams"`
	// Synced says the proxy acknowledged the current configuration of every
	// resource type it asked for, with no rejection outstanding.
	Synced bool `json:"synced"`
	// LastAck is when the proxy last acknowledged a response.
	LastAck *metav1.Time `json:"lastAck,omitempty"`
	// Resources are, per resource type the proxy subscribes to, the
	// versions sent and acknowledged.
	Resources []ResourceStatus `json:"resources"`
	// Nack is the last rejected response, until the type is acknowledged
	// again.
	Nack *Nack `json:"nack,omitempty"`
}

// ResourceStatus is one resource type's versions.
type ResourceStatus struct {
	// Type is the resource type's short name: Listener, RouteConfiguration,
	// Cluster, ClusterLoadAssignment, Secret.
	Type  string `json:"type"`
	Sent  string `json:"sent,omitempty"`
	Acked string `json:"acked,omitempty"`
}

// Nack is a response the proxy rejected.
type Nack struct {
	Type    string `json:"type"`
	Version string `json:"version,omitempty"`
	Message string `json:"message"`
	// Resources are the names of the resources of the rejected response.
	Resources []string    `json:"resources,omitempty"`
	At        metav1.Time `json:"at"`
}

// ProxyList is every proxy connected to any replica.
type ProxyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata"`
	Items           []Proxy `json:"items"`
	// Replicas are the controller replicas asked, with an error for each
	// that did not answer: its proxies are missing from Items.
	Replicas []Replica `json:"replicas"`
}

// Replica is one controller replica's part of a list.
type Replica struct {
	Name    string `json:"name"`
	Proxies int    `json:"proxies"`
	Error   string `json:"error,omitempty"`
}

// ProxyConfig is the configuration a controller replica currently serves to
// a proxy, every resource in Envoy's JSON form by type and name.
type ProxyConfig struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Node              string `json:"node"`
	Kind              string `json:"kind"`
	Replica           string `json:"replica"`
	// Resources are by short type name, then resource name.
	Resources map[string]map[string]json.RawMessage `json:"resources"`
}
