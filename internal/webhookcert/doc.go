// Package webhookcert lets the controller serve its injection webhook
// without cert-manager: it keeps a CA and a serving certificate in a
// Secret of its namespace, renews the certificate (and, years later, the
// CA) before it expires, writes the current pair where the webhook server
// reads it, and puts the CA in the webhook configuration's caBundle.
//
// Every replica runs it. They share the Secret: whoever finds a renewal
// due writes it, with the version it read, so two replicas never both
// renew; the others pick the new pair up from the Secret.
//
// It must not import the mesh pipeline (ingest, translate, publish): it
// only keeps a certificate.
package webhookcert
