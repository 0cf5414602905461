package deploytest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

const k8sDir = "deploy/kubernetes"

// The parts of Kubernetes objects the tests read.
type k8sObject struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Metadata   struct {
		Name string `yaml:"name"`
	} `yaml:"metadata"`
	Data map[string]string `yaml:"data"`
	Spec struct {
		Template struct {
			Metadata struct {
				Annotations map[string]string `yaml:"annotations"`
			} `yaml:"metadata"`
			Spec podSpec `yaml:"spec"`
		} `yaml:"template"`
	} `yaml:"spec"`
}

type podSpec struct {
	SecurityContext struct {
		RunAsNonRoot *bool `yaml:"runAsNonRoot"`
		RunAsUser    *int  `yaml:"runAsUser"`
	} `yaml:"securityContext"`
	InitContainers []container `yaml:"initContainers"`
	Containers     []container `yaml:"containers"`
	Volumes        []struct {
		Name      string `yaml:"name"`
		ConfigMap *struct {
			Name string `yaml:"name"`
		} `yaml:"configMap"`
		EmptyDir              *yaml.Node `yaml:"emptyDir"`
		PersistentVolumeClaim *yaml.Node `yaml:"persistentVolumeClaim"`
	} `yaml:"volumes"`
}

type container struct {
	Name          string   `yaml:"name"`
	Image         string   `yaml:"image"`
	RestartPolicy string   `yaml:"restartPolicy"`
	Command       []string `yaml:"command"`
	Args          []string `yaml:"args"`
	Env           []struct {
		Name      string `yaml:"name"`
		Value     string `yaml:"value"`
		ValueFrom *struct {
			SecretKeyRef *struct {
				Name string `yaml:"name"`
				Key  string `yaml:"key"`
			} `yaml:"secretKeyRef"`
		} `yaml:"valueFrom"`
	} `yaml:"env"`
	Ports []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
	} `yaml:"ports"`
	StartupProbe   *probe `yaml:"startupProbe"`
	ReadinessProbe *probe `yaml:"readinessProbe"`
	LivenessProbe  *probe `yaml:"livenessProbe"`
	Resources      struct {
		Requests map[string]string `yaml:"requests"`
		Limits   map[string]string `yaml:"limits"`
	} `yaml:"resources"`
	SecurityContext struct {
		RunAsUser                *int  `yaml:"runAsUser"`
		ReadOnlyRootFilesystem   *bool `yaml:"readOnlyRootFilesystem"`
		AllowPrivilegeEscalation *bool `yaml:"allowPrivilegeEscalation"`
	} `yaml:"securityContext"`
	VolumeMounts []struct {
		Name      string `yaml:"name"`
		MountPath string `yaml:"mountPath"`
		SubPath   string `yaml:"subPath"`
	} `yaml:"volumeMounts"`
}

type probe struct {
	HTTPGet *struct {
		Path string `yaml:"path"`
		Port any    `yaml:"port"`
	} `yaml:"httpGet"`
	TCPSocket *struct {
		Port any `yaml:"port"`
	} `yaml:"tcpSocket"`
}

func (c *container) env(name string) (string, bool) {
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value, true
		}
	}
	return "", false
}

// port resolves a probe port (a number or a named container port) to a number.
func (c *container) port(p any) int {
	switch v := p.(type) {
	case int:
		return v
	case string:
		for _, cp := range c.Ports {
			if cp.Name == v {
				return cp.ContainerPort
			}
		}
	}
	return 0
}

// binaryOfImage names the harvest binary an image runs (harvest-hub/harvest-proxy...).
func binaryOfImage(image string) string {
	base := image[strings.LastIndex(image, "/")+1:]
	base, _, _ = strings.Cut(base, ":")
	if slices.Contains(binaryNames, base) {
		return base
	}
	return ""
}

// k8sFiles lists the manifests (every YAML file but the kustomization).
func k8sFiles(t testing.TB) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(root, k8sDir))
	if err != nil {
		t.Fatal(err)
	}
	var files []string
	for _, e := range entries {
		n := e.Name()
		if (strings.HasSuffix(n, ".yaml") || strings.HasSuffix(n, ".yml")) && n != "kustomization.yaml" {
			files = append(files, n)
		}
	}
	sort.Strings(files)
	return files
}

func k8sObjects(t testing.TB) map[string][]k8sObject {
	t.Helper()
	out := map[string][]k8sObject{}
	for _, f := range k8sFiles(t) {
		for _, d := range yamlDocs(t, filepath.Join(k8sDir, f)) {
			var o k8sObject
			if err := d.Decode(&o); err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			if o.APIVersion == "" || o.Kind == "" || o.Metadata.Name == "" {
				t.Fatalf("%s: an object without apiVersion, kind or metadata.name", f)
			}
			out[f] = append(out[f], o)
		}
	}
	return out
}

func TestKustomizationListsEveryManifest(t *testing.T) {
	var k struct {
		Resources []string `yaml:"resources"`
	}
	if err := yaml.Unmarshal(readRepoFile(t, filepath.Join(k8sDir, "kustomization.yaml")), &k); err != nil {
		t.Fatal(err)
	}
	got := slices.Clone(k.Resources)
	sort.Strings(got)
	if want := k8sFiles(t); !slices.Equal(got, want) {
		t.Errorf("kustomization.yaml resources %v, want every manifest in %s: %v", got, k8sDir, want)
	}
}

func TestKubernetesHasNoLiteralSecrets(t *testing.T) {
	var problems []string
	for _, f := range append(k8sFiles(t), "kustomization.yaml") {
		for _, d := range yamlDocs(t, filepath.Join(k8sDir, f)) {
			problems = append(problems, secretProblems(f, d)...)
		}
	}
	for f, objs := range k8sObjects(t) {
		for _, o := range objs {
			if o.Kind == "Secret" {
				problems = append(problems, fmt.Sprintf("%s: a Secret object (%s): secrets are created outside the repository and referenced", f, o.Metadata.Name))
			}
		}
	}
	report(t, "Kubernetes secrets", problems)
}

// TestKubernetesWorkloads checks each Deployment's harvest containers against the real
// binaries and what the issue asks of the pods.
func TestKubernetesWorkloads(t *testing.T) {
	served := adminStatus(t)
	var problems []string
	add := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	seen := map[string]bool{}
	var rulesConfigMaps []string
	objects := k8sObjects(t)
	for _, objs := range objects {
		for _, o := range objs {
			if o.Kind == "ConfigMap" {
				if _, ok := o.Data["rules.yaml"]; ok {
					rulesConfigMaps = append(rulesConfigMaps, o.Metadata.Name)
				}
			}
		}
	}
	for f, objs := range objects {
		for _, o := range objs {
			if o.Kind != "Deployment" {
				continue
			}
			where := f + " " + o.Metadata.Name
			pod := o.Spec.Template.Spec
			if pod.SecurityContext.RunAsNonRoot == nil || !*pod.SecurityContext.RunAsNonRoot {
				add("%s: pod securityContext.runAsNonRoot is not true", where)
			}
			ann := o.Spec.Template.Metadata.Annotations
			if ann["prometheus.io/scrape"] != "true" || ann["prometheus.io/path"] != "/metrics" {
				add("%s: no Prometheus scrape annotations", where)
			}
			volumes := map[string]int{}
			for i, v := range pod.Volumes {
				volumes[v.Name] = i
			}
			all := append(slices.Clone(pod.InitContainers), pod.Containers...)
			for _, c := range all {
				cw := where + " container " + c.Name
				for _, r := range []string{"cpu", "memory"} {
					if c.Resources.Requests[r] == "" || c.Resources.Limits[r] == "" {
						add("%s: no %s request and limit", cw, r)
					}
				}
				if c.SecurityContext.ReadOnlyRootFilesystem == nil || !*c.SecurityContext.ReadOnlyRootFilesystem {
					add("%s: readOnlyRootFilesystem is not true", cw)
				}
				if c.SecurityContext.AllowPrivilegeEscalation == nil || *c.SecurityContext.AllowPrivilegeEscalation {
					add("%s: allowPrivilegeEscalation is not false", cw)
				}
				if u := c.SecurityContext.RunAsUser; u != nil && *u == 0 {
					add("%s: runs as root", cw)
				}
				if c.ReadinessProbe == nil || c.LivenessProbe == nil {
					add("%s: needs readiness and liveness probes", cw)
				}
				b := binaryOfImage(c.Image)
				if b == "" {
					continue
				}
				seen[b] = true
				a := acceptedBy(t, b)
				for _, e := range c.Env {
					if !a.env[e.Name] {
						add("%s: %s does not read environment variable %s", cw, b, e.Name)
					}
					if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil && e.ValueFrom.SecretKeyRef.Name != "harvest-secrets" {
						add("%s: %s comes from Secret %s, want harvest-secrets", cw, e.Name, e.ValueFrom.SecretKeyRef.Name)
					}
				}
				for _, u := range []string{"REDIS_URL", "RABBITMQ_URL"} {
					ok := false
					for _, e := range c.Env {
						ok = ok || (e.Name == u && e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil)
					}
					if !ok {
						add("%s: %s must come from a secretKeyRef", cw, u)
					}
				}
				problems = append(problems, flagProblems(cw+" args", b, c.Args, a)...)
				// The admin listener: probes, the scrape port and the admin address agree.
				envName := adminAddrEnv[b]
				addr, _ := c.env(envName)
				adminPort := listenPort(addr)
				if adminPort == "" || !strings.HasPrefix(addr, "0.0.0.0:") {
					add("%s: %s=%q must listen on 0.0.0.0 for the kubelet's probes and Prometheus", cw, envName, addr)
				}
				if ann["prometheus.io/port"] != adminPort {
					add("%s: prometheus.io/port %q, but the admin listener is on %s", where, ann["prometheus.io/port"], adminPort)
				}
				for kind, p := range map[string]*probe{"startup": c.StartupProbe, "readiness": c.ReadinessProbe, "liveness": c.LivenessProbe} {
					if p == nil {
						continue
					}
					var port int
					switch {
					case p.HTTPGet != nil:
						port = c.port(p.HTTPGet.Port)
						if st := served(b, p.HTTPGet.Path); st == 404 || st == 0 {
							add("%s: %s probe GET %s: %s's admin listener does not serve it (status %d)", cw, kind, p.HTTPGet.Path, b, st)
						}
					case p.TCPSocket != nil:
						port = c.port(p.TCPSocket.Port)
					}
					if fmt.Sprint(port) != adminPort {
						add("%s: %s probe on port %d, but the admin listener is on %s", cw, kind, port, adminPort)
					}
				}
				if b == "harvest-proxy" {
					if c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet == nil || c.ReadinessProbe.HTTPGet.Path != "/readyz" {
						add("%s: the readiness probe must GET /readyz (503 while draining)", cw)
					}
					if c.LivenessProbe == nil || c.LivenessProbe.HTTPGet == nil || c.LivenessProbe.HTTPGet.Path != "/healthz" {
						add("%s: the liveness probe must GET /healthz", cw)
					}
				}
				// rules.yaml: a ConfigMap mounted as a directory (subPath mounts never
				// see updates), and the file the binary is told to read is in it.
				cfg := ""
				for i, arg := range c.Args {
					if (arg == "-config" || arg == "--config") && i+1 < len(c.Args) {
						cfg = c.Args[i+1]
					}
				}
				if v, ok := c.env("HARVEST_CONFIG"); ok && cfg == "" {
					cfg = v
				}
				mounted := false
				for _, m := range c.VolumeMounts {
					i, ok := volumes[m.Name]
					if !ok {
						add("%s: mounts undeclared volume %s", cw, m.Name)
						continue
					}
					v := pod.Volumes[i]
					if v.ConfigMap != nil && slices.Contains(rulesConfigMaps, v.ConfigMap.Name) {
						if m.SubPath != "" {
							add("%s: rules ConfigMap mounted with subPath: updates would never reach the pod", cw)
						}
						if cfg == filepath.Join(m.MountPath, "rules.yaml") {
							mounted = true
						}
					}
				}
				if !mounted {
					add("%s: -config %q is not rules.yaml in a mounted rules ConfigMap", cw, cfg)
				}
				if b == "harvest-proxy" {
					problems = append(problems, sidecarProblems(cw, c, pod)...)
				}
			}
		}
	}
	for _, b := range []string{"harvest-proxy", "harvest-worker"} {
		if !seen[b] {
			add("no Deployment runs %s", b)
		}
	}
	report(t, "Kubernetes workloads", problems)
}

// sidecarProblems: the proxy is a sidecar of the app on loopback, and its outbox is on
// a volume the proxy can write.
func sidecarProblems(cw string, proxy container, pod podSpec) []string {
	var problems []string
	listen, _ := proxy.env("HARVEST_LISTEN")
	if !strings.HasPrefix(listen, "127.0.0.1:") {
		problems = append(problems, fmt.Sprintf("%s: HARVEST_LISTEN=%q; the sidecar serves the app on 127.0.0.1 only", cw, listen))
	}
	app := false
	for _, c := range pod.Containers {
		if v, _ := c.env("HARVEST_FIRESTORE_BASE_URL"); v == "http://"+listen {
			app = true
		}
	}
	if !app {
		problems = append(problems, fmt.Sprintf("%s: no app container in the pod has HARVEST_FIRESTORE_BASE_URL=http://%s", cw, listen))
	}
	outbox, _ := proxy.env("HARVEST_OUTBOX_DIR")
	onVolume := false
	for _, m := range proxy.VolumeMounts {
		if m.MountPath == outbox {
			for _, v := range pod.Volumes {
				if v.Name == m.Name && (v.EmptyDir != nil || v.PersistentVolumeClaim != nil) {
					onVolume = true
				}
			}
		}
	}
	if !onVolume {
		problems = append(problems, fmt.Sprintf("%s: HARVEST_OUTBOX_DIR=%q is not an emptyDir or PVC mount (the root filesystem is read-only)", cw, outbox))
	}
	return problems
}

// TestKubernetesRulesConfigMapIsValid runs `harvest-proxy rules check` on the rules the
// ConfigMap carries: a bad edit there is caught before a pod refuses it.
func TestKubernetesRulesConfigMapIsValid(t *testing.T) {
	found := 0
	for f, objs := range k8sObjects(t) {
		for _, o := range objs {
			rules, ok := o.Data["rules.yaml"]
			if o.Kind != "ConfigMap" || !ok {
				continue
			}
			found++
			path := filepath.Join(t.TempDir(), "rules.yaml")
			if err := os.WriteFile(path, []byte(rules), 0o600); err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command(bin("harvest-proxy"), "rules", "check", path).CombinedOutput()
			if err != nil {
				t.Errorf("%s: ConfigMap %s: harvest-proxy rules check refuses its rules.yaml: %v\n%s", f, o.Metadata.Name, err, out)
			}
		}
	}
	if found == 0 {
		t.Errorf("no ConfigMap in %s carries rules.yaml", k8sDir)
	}
}
