package nginx

import (
	"bytes"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// The shipped configuration, rendered with its defaults (only the paths point into the
// test's directory), passes `nginx -t` in both modes without a single warning.
func TestShippedConfigPassesNginxT(t *testing.T) {
	certs := makeCerts(t)
	for _, mode := range []string{"tls", "http"} {
		t.Run(mode, func(t *testing.T) {
			vars := map[string]string{"NGINX_MODE": mode}
			if mode == "tls" {
				vars["NGINX_TLS_CERT"] = filepath.Join(certs, "tls.crt")
				vars["NGINX_TLS_KEY"] = filepath.Join(certs, "tls.key")
			}
			p := render(t, vars)
			out := p.check(t)
			if !strings.Contains(out, "test is successful") {
				t.Errorf("nginx -t did not report success:\n%s", out)
			}
			if regexp.MustCompile(`\[(warn|error|crit|alert|emerg)\]`).MatchString(out) {
				t.Errorf("nginx -t complained:\n%s", out)
			}
			// The mode picks the servers: only TLS mode names a certificate.
			conf, err := os.ReadFile(filepath.Join(p.dir, "conf", "conf.d", "harvest.conf"))
			if err != nil {
				t.Fatal(err)
			}
			if want := "include conf.d/servers-" + mode + ".conf;"; !strings.Contains(string(conf), want) {
				t.Errorf("conf.d/harvest.conf lacks %q", want)
			}
		})
	}
}

// A template naming a variable without a value is refused; nginx's own variables, in
// either spelling, are left alone; a misspelt override is refused.
func TestRender(t *testing.T) {
	vars := map[string]string{"NGINX_SERVER_NAME": "harvest.example"}
	out, err := Substitute("x", []byte("server_name ${NGINX_SERVER_NAME}; return 301 https://$host${request_uri};"), vars)
	if err != nil {
		t.Fatal(err)
	}
	if want := "server_name harvest.example; return 301 https://$host${request_uri};"; string(out) != want {
		t.Errorf("Substitute = %q, want %q", out, want)
	}
	if _, err := Substitute("x.conf.template", []byte("listen ${NGINX_NOPE};"), vars); err == nil ||
		!strings.Contains(err.Error(), "x.conf.template") || !strings.Contains(err.Error(), "NGINX_NOPE") {
		t.Errorf("unset placeholder: err = %v, want one naming the file and the variable", err)
	}
	if err := Render(".", t.TempDir(), map[string]string{"NGINX_SEVER_NAME": "x"}); err == nil {
		t.Error("Render accepted NGINX_SEVER_NAME, which defaults.env does not list")
	}
	// Every placeholder the templates use is listed in defaults.env, and every listed
	// one is used (the list is the documentation).
	defaults, err := Defaults(".")
	if err != nil {
		t.Fatal(err)
	}
	used := map[string]bool{}
	templates, _ := filepath.Glob("templates/*" + TemplateSuffix)
	for _, f := range templates {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range placeholder.FindAllSubmatch(data, -1) {
			if name := string(m[1]) + string(m[2]); strings.HasPrefix(name, "NGINX_") {
				used[name] = true
				if _, ok := defaults[name]; !ok {
					t.Errorf("%s uses %s, which defaults.env does not list", f, name)
				}
			}
		}
	}
	for name := range defaults {
		if !used[name] {
			t.Errorf("defaults.env lists %s, which no template uses", name)
		}
	}
}

// render.sh (envsubst, as in the official image) and Render produce the same files, so
// what the tests load is what a deploy loads.
func TestRenderShMatchesRender(t *testing.T) {
	if _, err := exec.LookPath("envsubst"); err != nil {
		t.Fatal("envsubst not found: apt-get install gettext-base (deploy/dev-services.sh)")
	}
	vars := map[string]string{
		"NGINX_MODE":         "http",
		"NGINX_CSP":          "",
		"NGINX_CORS_ORIGINS": "https://a.example https://b.example:8443",
		"NGINX_HTTP_LISTEN":  "127.0.0.1:8081",
	}
	viaGo, viaSh := t.TempDir(), t.TempDir()
	if err := Render(".", viaGo, vars); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("bash", "render.sh", viaSh)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "NGINX_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	for k, v := range vars {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("render.sh: %v\n%s", err, out)
	}
	files := 0
	err := filepath.WalkDir(viaGo, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(viaGo, path)
		want, _ := os.ReadFile(path)
		got, err := os.ReadFile(filepath.Join(viaSh, rel))
		if err != nil {
			t.Errorf("render.sh did not write %s: %v", rel, err)
		} else if !bytes.Equal(got, want) {
			t.Errorf("%s differs between render.sh and Render:\n%s\n---\n%s", rel, got, want)
		}
		files++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files < 5 {
		t.Errorf("Render wrote only %d files", files)
	}
}
