// Package argohealth runs the Argo CD health checks Weft ships
// (config/argocd) the way Argo CD does, for tests: the script from the
// argocd-cm key Argo CD looks up for the object's kind, in gopher-lua, the
// interpreter Argo CD embeds, with the object as the global obj and a
// table of status and message returned.
//
// It is for tests only: nothing the controller runs may import it.
package argohealth
