// Package testsigner stands in for cert-manager and its CA issuer where no
// cert-manager runs: in envtest tests, the local demo and the e2e harness. A
// Signer holds a CA key in memory, watches (by polling) the Certificates whose
// issuerRef names its issuer, and does what cert-manager's CA issuer would:
// it signs an X.509 certificate with the requested SANs, key algorithm,
// usages and lifetime, writes it into the Certificate's Secret (tls.crt,
// tls.key, ca.crt and cert-manager's annotations) and sets the Certificate's
// status (Ready, notBefore, notAfter, renewalTime, revision). It renews when
// renewalTime passes on its (injectable) clock or when asked, can switch to a
// new CA, and can be told to fail a Certificate the way a broken issuer would.
//
// It is a test fixture. Controller code must never import it; only tests,
// hack/ and e2e/ may. It must not import controllers/ or webhooks/.
package testsigner
