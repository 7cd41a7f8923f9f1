package manifest

import (
	"strings"
	"testing"
)

func TestDecode(t *testing.T) {
	in := `apiVersion: v1
kind: Service
metadata: {name: a}
---
---
{"apiVersion": "v1", "kind": "List", "items": [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "b"}}, {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "c"}}]}
---
apiVersion: v1
kind: Namespace
metadata: {name: d}
`
	objs, err := Decode(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, o := range objs {
		got = append(got, o.GetKind()+"/"+o.GetName())
	}
	if strings.Join(got, " ") != "Service/a ConfigMap/b Secret/c Namespace/d" {
		t.Errorf("decoded %v", got)
	}
	if _, err := Decode(strings.NewReader("kind: [")); err == nil || !strings.Contains(err.Error(), "document 1") {
		t.Errorf("a broken document: %v, want an error naming it", err)
	}
}
