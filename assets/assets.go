// Package assets embeds the dashboard's static files: the built Tailwind CSS,
// the vendored htmx and the dashboard's own script.
package assets

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
)

//go:embed static
var files embed.FS

// Static is the file tree served under /assets/.
var Static, _ = fs.Sub(files, "static")

// versions holds a content hash per file, so that URLs change when files do
// and browsers may cache them for good.
var versions = func() map[string]string {
	v := map[string]string{}
	fs.WalkDir(Static, ".", func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			b, _ := fs.ReadFile(Static, path)
			sum := sha256.Sum256(b)
			v[path] = hex.EncodeToString(sum[:6])
		}
		return nil
	})
	return v
}()

// Path is the URL of a static file, with its content hash.
func Path(name string) string {
	return "/assets/" + name + "?v=" + versions[name]
}
