package identity

import (
	"crypto/x509"
	"net/url"
	"strings"
	"testing"
)

func TestSpiffeIDRoundTrip(t *testing.T) {
	got := SpiffeID("cluster.local", "shop", "checkout")
	if want := "spiffe://cluster.local/ns/shop/sa/checkout"; got != want {
		t.Fatalf("SpiffeID = %q, want %q", got, want)
	}
	id, err := ParseSpiffeID(got)
	if err != nil {
		t.Fatalf("ParseSpiffeID(%q): %v", got, err)
	}
	want := ID{TrustDomain: "cluster.local", Namespace: "shop", ServiceAccount: "checkout"}
	if id != want {
		t.Fatalf("ParseSpiffeID = %+v, want %+v", id, want)
	}
	if id.String() != got {
		t.Fatalf("String() = %q, want %q", id.String(), got)
	}
}

func TestParseSpiffeIDAcceptsKubernetesNames(t *testing.T) {
	for _, s := range []string{
		"spiffe://td/ns/a/sa/b",
		"spiffe://prod_eu-1.example.org/ns/kube-system/sa/default",
		"spiffe://cluster.local/ns/shop/sa/my.service-account",
		"spiffe://cluster.local/ns/" + strings.Repeat("n", 63) + "/sa/" + strings.Repeat("s", 253),
	} {
		if _, err := ParseSpiffeID(s); err != nil {
			t.Errorf("ParseSpiffeID(%q): %v", s, err)
		}
	}
}

func TestParseSpiffeIDRejects(t *testing.T) {
	for _, s := range []string{
		"",
		"https://cluster.local/ns/a/sa/b",
		"SPIFFE://cluster.local/ns/a/sa/b",
		"spiffe://",
		"spiffe://cluster.local",
		"spiffe://cluster.local/",
		"spiffe:///ns/a/sa/b",
		"spiffe://Cluster.Local/ns/a/sa/b",
		"spiffe://cluster.local:8443/ns/a/sa/b",
		"spiffe://user@cluster.local/ns/a/sa/b",
		"spiffe://cluster.local/ns/a/sa/b/",
		"spiffe://cluster.local/ns/a/sa/b?x=1",
		"spiffe://cluster.local/ns/a/sa/b#frag",
		"spiffe://cluster.local/ns//sa/b",
		"spiffe://cluster.local/ns/a/sa/",
		"spiffe://cluster.local/sa/b/ns/a",
		"spiffe://cluster.local/ns/a/sa/b/extra",
		"spiffe://cluster.local/ns/A/sa/b",
		"spiffe://cluster.local/ns/a.b/sa/c",
		"spiffe://cluster.local/ns/a/sa/B",
		"spiffe://cluster.local/ns/a/sa/-b",
		"spiffe://cluster.local/ns/" + strings.Repeat("n", 64) + "/sa/b",
		"spiffe://cluster.local/ns/a/sa/" + strings.Repeat("s", 254),
		"spiffe://" + strings.Repeat("t", 256) + "/ns/a/sa/b",
		"spiffe://cluster.local/ns/a/sa/" + strings.Repeat("s", 2048),
	} {
		if id, err := ParseSpiffeID(s); err == nil {
			t.Errorf("ParseSpiffeID(%q) = %+v, want an error", s, id)
		}
	}
}

func TestValidateTrustDomain(t *testing.T) {
	for _, td := range []string{"cluster.local", "a", "prod_1-eu.example"} {
		if err := ValidateTrustDomain(td); err != nil {
			t.Errorf("ValidateTrustDomain(%q): %v", td, err)
		}
	}
	for _, td := range []string{"", "Cluster", "a/b", "a:1", "a b", strings.Repeat("a", 256)} {
		if err := ValidateTrustDomain(td); err == nil {
			t.Errorf("ValidateTrustDomain(%q) succeeded, want an error", td)
		}
	}
}

func TestIDFromCertificate(t *testing.T) {
	mustURL := func(s string) *url.URL {
		u, err := url.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		return u
	}
	good := &x509.Certificate{URIs: []*url.URL{mustURL("spiffe://cluster.local/ns/shop/sa/web")}}
	id, err := IDFromCertificate(good)
	if err != nil {
		t.Fatalf("IDFromCertificate: %v", err)
	}
	if id.Namespace != "shop" || id.ServiceAccount != "web" {
		t.Fatalf("IDFromCertificate = %+v", id)
	}
	for name, c := range map[string]*x509.Certificate{
		"nil":        nil,
		"no uri":     {},
		"two uris":   {URIs: []*url.URL{mustURL("spiffe://cluster.local/ns/shop/sa/web"), mustURL("spiffe://cluster.local/ns/shop/sa/db")}},
		"not spiffe": {URIs: []*url.URL{mustURL("https://example.com/ns/shop/sa/web")}},
	} {
		if _, err := IDFromCertificate(c); err == nil {
			t.Errorf("%s: IDFromCertificate succeeded, want an error", name)
		}
	}
}
