package nginx

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
)

// TemplateSuffix is what the official nginx image strips from the files under
// /etc/nginx/templates when it renders them (NGINX_ENVSUBST_TEMPLATE_SUFFIX).
const TemplateSuffix = ".template"

// placeholder matches what envsubst replaces: $NAME and ${NAME}.
var placeholder = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)`)

// envName is what defaults.env may name.
var envName = regexp.MustCompile(`^NGINX_[A-Z0-9_]+$`)

// unrendered matches a placeholder of ours that survived rendering.
var unrendered = regexp.MustCompile(`\$\{?NGINX_[A-Za-z0-9_]*\}?`)

// Defaults reads the placeholders and their default values from dir/defaults.env:
// NAME=value lines, blank lines and # comments ignored, values taken literally.
func Defaults(dir string) (map[string]string, error) {
	path := filepath.Join(dir, "defaults.env")
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("nginx defaults: %w", err)
	}
	vars := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, value, ok := strings.Cut(line, "=")
		if !ok || !envName.MatchString(name) {
			return nil, fmt.Errorf("%s:%d: want NGINX_NAME=value, got %q", path, n, line)
		}
		if _, dup := vars[name]; dup {
			return nil, fmt.Errorf("%s:%d: %s set twice", path, n, name)
		}
		vars[name] = value
	}
	return vars, sc.Err()
}

// Render writes the configuration in src (the nginx/ directory) to dst, laid out as
// nginx loads it: dst/nginx.conf, dst/snippets/*.conf, and dst/conf.d/NAME.conf for
// each src/templates/NAME.conf.template, rendered with vars over the defaults of
// src/defaults.env. A name in vars that defaults.env does not list is an error, so a
// misspelt override cannot pass unnoticed.
func Render(src, dst string, vars map[string]string) error {
	values, err := Defaults(src)
	if err != nil {
		return err
	}
	for name, v := range vars {
		if _, known := values[name]; !known {
			return fmt.Errorf("nginx render: %s is not a placeholder listed in defaults.env", name)
		}
		values[name] = v
	}
	if err := copyFile(filepath.Join(src, "nginx.conf"), filepath.Join(dst, "nginx.conf")); err != nil {
		return err
	}
	snippets, err := filepath.Glob(filepath.Join(src, "snippets", "*.conf"))
	if err != nil {
		return err
	}
	for _, f := range snippets {
		if err := copyFile(f, filepath.Join(dst, "snippets", filepath.Base(f))); err != nil {
			return err
		}
	}
	templates, err := filepath.Glob(filepath.Join(src, "templates", "*"+TemplateSuffix))
	if err != nil {
		return err
	}
	if len(templates) == 0 {
		return fmt.Errorf("nginx render: no templates under %s", filepath.Join(src, "templates"))
	}
	sort.Strings(templates)
	for _, f := range templates {
		data, err := os.ReadFile(f)
		if err != nil {
			return fmt.Errorf("nginx render: %w", err)
		}
		out, err := Substitute(filepath.Base(f), data, values)
		if err != nil {
			return err
		}
		name := strings.TrimSuffix(filepath.Base(f), TemplateSuffix)
		if err := writeFile(filepath.Join(dst, "conf.d", name), out); err != nil {
			return err
		}
	}
	return nil
}

// Substitute replaces $NAME and ${NAME} for every NAME in vars, as
// `envsubst '${NAME} ...'` does, and fails if a ${NGINX_...} placeholder remains.
func Substitute(file string, data []byte, vars map[string]string) ([]byte, error) {
	out := placeholder.ReplaceAllFunc(data, func(m []byte) []byte {
		name := strings.Trim(string(m), "${}")
		if v, ok := vars[name]; ok {
			return []byte(v)
		}
		return m
	})
	if left := unrendered.Find(out); left != nil {
		return nil, fmt.Errorf("nginx render: %s: %s has no value (list it in defaults.env)", file, left)
	}
	return out, nil
}

// copyFile copies a static file, which must hold no placeholder: only templates are
// rendered, here and in the official image.
func copyFile(from, to string) error {
	data, err := os.ReadFile(from)
	if err != nil {
		return fmt.Errorf("nginx render: %w", err)
	}
	if left := unrendered.Find(data); left != nil {
		return fmt.Errorf("nginx render: %s holds placeholder %s but is not a template", from, left)
	}
	return writeFile(to, data)
}

func writeFile(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("nginx render: %w", err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		return fmt.Errorf("nginx render: %w", err)
	}
	return nil
}
