package deploytest

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

var (
	// fullName: Name: "harvest_proxy_requests_total" in a prometheus *Opts literal.
	fullName = regexp.MustCompile(`Name:\s*"([a-zA-Z_:][a-zA-Z0-9_:]*)"`)
	// nsSub: Namespace: "harvest", Subsystem: "events" (emitter builds names from parts).
	nsSub = regexp.MustCompile(`Namespace:\s*"(\w+)",\s*Subsystem:\s*"(\w+)"`)
	// helperCall: counter("published_total", "help ...") in a file that builds names
	// from a namespace and subsystem.
	helperCall = regexp.MustCompile(`\b\w+\(\s*"([a-z][a-z0-9_]*)",\s*"`)
	// queried: a harvest metric in a PromQL expression.
	queried = regexp.MustCompile(`\bharvest_[a-zA-Z0-9_]+`)
)

// registeredMetrics reads the metric names the Go code registers: full Name fields,
// and Namespace_Subsystem_Name for files that split them (emitter/metrics.go).
func registeredMetrics(t testing.TB) map[string]bool {
	t.Helper()
	names := map[string]bool{}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			switch d.Name() {
			case ".git", "node_modules", "deploy", "bin", ".tools", "data":
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		src := string(data)
		if !strings.Contains(src, "prometheus") {
			return nil
		}
		prefix := ""
		if m := nsSub.FindStringSubmatch(src); m != nil {
			prefix = m[1] + "_" + m[2] + "_"
		}
		add := func(n string) {
			if prefix != "" && !strings.HasPrefix(n, prefix) && !strings.HasPrefix(n, "harvest_") {
				n = prefix + n
			}
			names[n] = true
		}
		for _, m := range fullName.FindAllStringSubmatch(src, -1) {
			add(m[1])
		}
		if prefix != "" {
			for _, m := range helperCall.FindAllStringSubmatch(src, -1) {
				add(m[1])
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("reading the Go source for metric names: %v", err)
	}
	return names
}

// metricKnown says whether a queried series comes from a registered metric; histograms
// are queried through their _bucket, _sum and _count series.
func metricKnown(registered map[string]bool, q string) bool {
	if registered[q] {
		return true
	}
	for _, suf := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(q, suf); ok && registered[base] {
			return true
		}
	}
	return false
}

type dashboard struct {
	UID    string  `json:"uid"`
	Title  string  `json:"title"`
	Panels []panel `json:"panels"`
}

type panel struct {
	Title      string `json:"title"`
	Type       string `json:"type"`
	Datasource *struct {
		UID string `json:"uid"`
	} `json:"datasource"`
	Targets []struct {
		Expr string `json:"expr"`
	} `json:"targets"`
	Panels []panel `json:"panels"`
}

// dashboardProblems: every panel queries the provisioned datasource with non-empty
// expressions naming registered metrics, and the topics users rely on are all there.
func dashboardProblems(d dashboard, dsUID string, registered map[string]bool) []string {
	var problems []string
	queriedAll := map[string]bool{}
	var walk func(ps []panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			walk(p.Panels)
			if p.Type == "row" {
				continue
			}
			if p.Datasource == nil || p.Datasource.UID != dsUID {
				problems = append(problems, fmt.Sprintf("panel %q does not use the provisioned datasource %s", p.Title, dsUID))
			}
			if len(p.Targets) == 0 {
				problems = append(problems, fmt.Sprintf("panel %q has no query", p.Title))
			}
			for _, tg := range p.Targets {
				if strings.TrimSpace(tg.Expr) == "" {
					problems = append(problems, fmt.Sprintf("panel %q has an empty query", p.Title))
				}
				for _, q := range queried.FindAllString(tg.Expr, -1) {
					queriedAll[q] = true
					if !metricKnown(registered, q) {
						problems = append(problems, fmt.Sprintf("panel %q queries %s, which the Go code does not register", p.Title, q))
					}
				}
			}
		}
	}
	walk(d.Panels)
	for _, want := range []string{
		"harvest_proxy_requests_total",                   // hit ratio, requests by result
		"harvest_proxy_billed_reads_avoided_total",       // billed reads saved
		"harvest_proxy_upstream_duration_seconds_bucket", // upstream latency
		"harvest_events_published_total",                 // events published
		"harvest_events_outboxed_total",                  // events outboxed
		"harvest_events_outbox_depth_events",             // outbox depth
		"harvest_events_broker_connected",                // broker connected
		"harvest_worker_deliveries_total",                // deliveries by outcome, retries, DLQ
		"harvest_cache_redis_errors_total",               // Redis errors
		"harvest_cache_invalidation_subscribed",          // subscription state
	} {
		if !queriedAll[want] {
			problems = append(problems, fmt.Sprintf("the dashboard does not show %s", want))
		}
	}
	return problems
}

func TestGrafanaDashboard(t *testing.T) {
	var ds struct {
		Datasources []struct {
			UID, Type, URL string
		} `yaml:"datasources"`
	}
	if err := yaml.Unmarshal(readRepoFile(t, "deploy/grafana/provisioning/datasources/prometheus.yaml"), &ds); err != nil {
		t.Fatalf("datasource provisioning: %v", err)
	}
	if len(ds.Datasources) != 1 || ds.Datasources[0].Type != "prometheus" || ds.Datasources[0].UID == "" {
		t.Fatalf("want one prometheus datasource with a uid, got %+v", ds.Datasources)
	}
	if want := "http://prometheus:9090"; ds.Datasources[0].URL != want {
		t.Errorf("datasource URL %s, want %s (the compose service)", ds.Datasources[0].URL, want)
	}
	var prov struct {
		Providers []struct {
			Options struct{ Path string } `yaml:"options"`
		} `yaml:"providers"`
	}
	if err := yaml.Unmarshal(readRepoFile(t, "deploy/grafana/provisioning/dashboards/harvest.yaml"), &prov); err != nil {
		t.Fatalf("dashboard provisioning: %v", err)
	}
	c := loadCompose(t)
	mounted := false
	for _, v := range c.Services["grafana"].Volumes {
		mounted = mounted || (len(prov.Providers) == 1 && v == "./deploy/grafana/dashboards:"+prov.Providers[0].Options.Path+":ro")
	}
	if !mounted {
		t.Errorf("grafana does not mount deploy/grafana/dashboards where the provisioning reads dashboards (%+v)", prov.Providers)
	}

	files, _ := filepath.Glob(filepath.Join(root, "deploy/grafana/dashboards/*.json"))
	if len(files) == 0 {
		t.Fatal("no dashboard in deploy/grafana/dashboards")
	}
	registered := registeredMetrics(t)
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var d dashboard
		if err := json.Unmarshal(data, &d); err != nil {
			t.Errorf("%s is not valid JSON: %v", f, err)
			continue
		}
		if d.UID == "" || d.Title == "" {
			t.Errorf("%s: dashboards need a uid and a title", f)
		}
		report(t, filepath.Base(f), dashboardProblems(d, ds.Datasources[0].UID, registered))
	}
}

// The metric names must come from the code: the well-known ones are found, and a name
// the code does not have is not.
func TestRegisteredMetricsAreReadFromTheCode(t *testing.T) {
	reg := registeredMetrics(t)
	var missing []string
	for _, n := range []string{"harvest_proxy_requests_total", "harvest_cache_redis_errors_total",
		"harvest_events_published_total", "harvest_events_outbox_depth_events", "harvest_worker_deliveries_total"} {
		if !reg[n] {
			missing = append(missing, n)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("registered metrics not found in the source: %v (found %d names)", missing, len(reg))
	}
	if metricKnown(reg, "harvest_proxy_no_such_metric_total") {
		t.Error("an unregistered name was taken for a registered one")
	}
}
