package cluster

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// dataLink is the symlink the kubelet swaps to publish a new version of a
// volume's files in one step.
const dataLink = "..data"

// writeAtomic publishes files in dir the way the kubelet's atomic writer
// does: the files go into a new hidden timestamped directory, ..data is
// re-pointed at it with a rename (atomic), and each visible name is a
// symlink through ..data. A reader therefore sees either the old set or
// the new one, never a certificate from one and a key from the other.
func writeAtomic(dir string, files map[string][]byte, mode os.FileMode) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	stamp := time.Now().UTC().Format("..2006_01_02_15_04_05.000000000")
	tsDir := filepath.Join(dir, stamp)
	if err := os.Mkdir(tsDir, 0o755); err != nil {
		return err
	}
	names := slices.Sorted(maps.Keys(files))
	for _, name := range names {
		if strings.Contains(name, "..") || filepath.IsAbs(name) {
			return fmt.Errorf("volume file name %q is not allowed", name)
		}
		p := filepath.Join(tsDir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, files[name], mode); err != nil {
			return err
		}
	}
	old, _ := os.Readlink(filepath.Join(dir, dataLink))
	tmp := filepath.Join(dir, dataLink+"_tmp")
	_ = os.Remove(tmp)
	if err := os.Symlink(stamp, tmp); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(dir, dataLink)); err != nil {
		return err
	}
	// Visible names point through ..data; only their set can change.
	visible := map[string]bool{}
	for _, name := range names {
		top, _, _ := strings.Cut(name, "/")
		visible[top] = true
		link := filepath.Join(dir, top)
		if _, err := os.Lstat(link); errors.Is(err, fs.ErrNotExist) {
			if err := os.Symlink(filepath.Join(dataLink, top), link); err != nil {
				return err
			}
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), "..") && !visible[e.Name()] {
			_ = os.Remove(filepath.Join(dir, e.Name()))
		}
	}
	if old != "" && old != stamp {
		_ = os.RemoveAll(filepath.Join(dir, old))
	}
	return nil
}

// sameFiles reports whether dir's current ..data version holds exactly files.
func sameFiles(dir string, files map[string][]byte) bool {
	target, err := os.Readlink(filepath.Join(dir, dataLink))
	if err != nil {
		return false
	}
	n := 0
	err = filepath.WalkDir(filepath.Join(dir, target), func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, err := filepath.Rel(filepath.Join(dir, target), path)
		if err != nil {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		want, ok := files[filepath.ToSlash(rel)]
		if !ok || !bytes.Equal(b, want) {
			return errors.New("differs")
		}
		n++
		return nil
	})
	return err == nil && n == len(files)
}
