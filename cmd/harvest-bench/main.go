// Command harvest-bench is a dev tool for `make bench` (deploy/bench.sh): the small
// programs the benchmark script needs beside wrk and nginx. It is not shipped.
//
//	harvest-bench emulator -port N          run the Firestore emulator until SIGTERM
//	harvest-bench seed -emulator H:P -project P -prefix coll/doc -n N
//	                                        write N documents {version: 1} (batch commits)
//	harvest-bench ceiling -listen A -from URL
//	                                        a bare fasthttp server answering the bytes URL
//	                                        answered, from a map keyed by request URI
//	harvest-bench miss -direct URL -proxy URL -n N
//	                                        median added latency of a miss: N distinct
//	                                        documents read directly and through the proxy,
//	                                        alternating which goes first
//	harvest-bench table FILE                the table of `make bench` from the results
//	                                        file the script wrote (key=value lines)
package main

import (
	"bufio"
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/harvest-hub/edge/internal/testbed"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: harvest-bench emulator|seed|ceiling|miss|table ... (see the package comment)")
		os.Exit(2)
	}
	var err error
	args := os.Args[2:]
	switch os.Args[1] {
	case "emulator":
		err = emulator(args)
	case "seed":
		err = seedDocs(args)
	case "ceiling":
		err = ceiling(args)
	case "miss":
		err = miss(args)
	case "table":
		err = table(args)
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "harvest-bench %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}

func emulator(args []string) error {
	fs := flag.NewFlagSet("emulator", flag.ExitOnError)
	port := fs.Int("port", 0, "loopback port (0: a free one)")
	fs.Parse(args)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	proc, err := testbed.StartEmulator(ctx, *port, slog.New(slog.NewTextHandler(os.Stderr, nil)))
	if err != nil {
		return err
	}
	defer proc.Stop()
	fmt.Println(proc.Addr) // the script waits for this line
	<-ctx.Done()
	return nil
}

func seedDocs(args []string) error {
	fs := flag.NewFlagSet("seed", flag.ExitOnError)
	emu := fs.String("emulator", "", "emulator host:port")
	project := fs.String("project", "bench", "project id")
	prefix := fs.String("prefix", "products/d", "document path prefix; ids are prefix0..prefixN-1")
	n := fs.Int("n", 1, "documents")
	fs.Parse(args)
	root := "projects/" + *project + "/databases/(default)/documents/"
	for start := 0; start < *n; start += 500 {
		var writes []string
		for i := start; i < min(*n, start+500); i++ {
			writes = append(writes, fmt.Sprintf(`{"update":{"name":%q,"fields":{"version":{"integerValue":"1"},"name":{"stringValue":"item %d"},"price":{"integerValue":"%d"}}}}`,
				root+*prefix+strconv.Itoa(i), i, i%100))
		}
		body := `{"writes":[` + strings.Join(writes, ",") + `]}`
		url := "http://" + *emu + "/v1/projects/" + *project + "/databases/(default)/documents:commit"
		resp, err := http.Post(url, "application/json", strings.NewReader(body))
		if err != nil {
			return err
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("commit: %d %s", resp.StatusCode, b)
		}
	}
	return nil
}

func ceiling(args []string) error {
	fs := flag.NewFlagSet("ceiling", flag.ExitOnError)
	listen := fs.String("listen", "127.0.0.1:0", "address")
	from := fs.String("from", "", "URL whose answer is served (its path and query are the map key)")
	fs.Parse(args)
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	req.SetRequestURI(*from)
	if err := fasthttp.Do(req, resp); err != nil || resp.StatusCode() != 200 {
		return fmt.Errorf("GET %s: %d %v", *from, resp.StatusCode(), err)
	}
	ctype, body := append([]byte(nil), resp.Header.ContentType()...), append([]byte(nil), resp.Body()...)
	u := fasthttp.AcquireURI()
	if err := u.Parse(nil, []byte(*from)); err != nil {
		return err
	}
	type answer struct{ ctype, body []byte }
	answers := map[string]answer{string(u.RequestURI()): {ctype, body}}
	s := &fasthttp.Server{
		Handler: func(ctx *fasthttp.RequestCtx) {
			a, ok := answers[string(ctx.RequestURI())]
			if !ok {
				ctx.SetStatusCode(404)
				return
			}
			ctx.Response.Header.SetContentTypeBytes(a.ctype)
			ctx.Response.SetBodyRaw(a.body)
		},
		NoDefaultServerHeader: true,
		NoDefaultDate:         true,
	}
	return s.ListenAndServe(*listen)
}

func miss(args []string) error {
	fs := flag.NewFlagSet("miss", flag.ExitOnError)
	direct := fs.String("direct", "", "documents root URL on the emulator (…/documents)")
	viaProxy := fs.String("proxy", "", "the same root through the proxy")
	metricsURL := fs.String("metrics", "", "the proxy's admin /metrics URL (optional): also report the proxy's own time, outside the upstream")
	prefix := fs.String("prefix", "misses/m", "document path prefix (seeded)")
	n := fs.Int("n", 200, "documents")
	fs.Parse(args)
	client := &fasthttp.Client{MaxConnsPerHost: 4}
	get := func(url string) (time.Duration, string, error) {
		req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		defer fasthttp.ReleaseRequest(req)
		defer fasthttp.ReleaseResponse(resp)
		req.SetRequestURI(url)
		start := time.Now()
		err := client.Do(req, resp)
		d := time.Since(start)
		if err == nil && resp.StatusCode() != 200 {
			err = fmt.Errorf("GET %s: %d", url, resp.StatusCode())
		}
		return d, string(resp.Header.Peek("X-Cache")), err
	}
	// Warm the connections both ways (not counted): the proxy's to the upstream too,
	// so document 0 is read through it once as a miss and then as hits.
	for i := 0; i < 5; i++ {
		get(*direct + "/" + *prefix + "0")
		get(*viaProxy + "/" + *prefix + "0")
	}
	var up0 upstreamTotals
	if *metricsURL != "" {
		var err error
		if up0, err = scrapeUpstream(*metricsURL); err != nil {
			return err
		}
	}
	// Each document is read once each way, back to back, the order alternating, so
	// the pair shares the emulator's state of the moment; the median of the paired
	// differences resists its jitter better than the difference of the medians.
	var ds, ps, diffs []float64
	for i := 1; i < *n; i++ {
		path := "/" + *prefix + strconv.Itoa(i)
		var d, p time.Duration
		var xc string
		var err1, err2 error
		if i%2 == 0 {
			d, _, err1 = get(*direct + path)
			p, xc, err2 = get(*viaProxy + path)
		} else {
			p, xc, err2 = get(*viaProxy + path)
			d, _, err1 = get(*direct + path)
		}
		if err := cmpErr(err1, err2); err != nil {
			return err
		}
		if xc != "MISS" {
			return fmt.Errorf("%s through the proxy: X-Cache %q, want MISS", path, xc)
		}
		ds, ps = append(ds, ms(d)), append(ps, ms(p))
		diffs = append(diffs, ms(p)-ms(d))
	}
	fmt.Printf("miss_direct_ms=%.3f\nmiss_proxy_ms=%.3f\nmiss_added_ms=%.3f\nmiss_samples=%d\n", median(ds), median(ps), median(diffs), len(diffs))
	if *metricsURL != "" {
		// The proxy's own time on these very requests: what the client waited minus
		// what the proxy's upstream histogram says the upstream took (loopback hop to
		// the proxy included). No emulator jitter in it.
		up1, err := scrapeUpstream(*metricsURL)
		if err != nil {
			return err
		}
		if got := up1.count - up0.count; got != float64(len(ps)) {
			fmt.Fprintf(os.Stderr, "miss: the proxy asked the upstream %.0f times for %d misses: no own-time figure\n", got, len(ps))
			return nil
		}
		var total float64
		for _, v := range ps {
			total += v
		}
		own := (total - 1000*(up1.sum-up0.sum)) / float64(len(ps))
		fmt.Printf("miss_proxy_own_ms=%.3f\n", own)
	}
	return nil
}

// upstreamTotals is the proxy's upstream latency histogram summed over every op.
type upstreamTotals struct{ sum, count float64 }

func scrapeUpstream(url string) (upstreamTotals, error) {
	var t upstreamTotals
	resp, err := http.Get(url)
	if err != nil {
		return t, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		name, rest, _ := strings.Cut(line, "{")
		var dst *float64
		switch name {
		case "harvest_proxy_upstream_duration_seconds_sum":
			dst = &t.sum
		case "harvest_proxy_upstream_duration_seconds_count":
			dst = &t.count
		default:
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			return t, fmt.Errorf("%s: %q: %w", url, line, err)
		}
		*dst += v
	}
	return t, sc.Err()
}

func cmpErr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// results are the key=value lines of the script; a key may repeat (one per round).
type results map[string][]float64

func (r results) get(k string) (float64, bool) {
	v, ok := r[k]
	if !ok || len(v) == 0 {
		return 0, false
	}
	return median(v), true
}

func table(args []string) error {
	if len(args) != 1 {
		return fmt.Errorf("usage: harvest-bench table FILE")
	}
	data, err := os.ReadFile(args[0])
	if err != nil {
		return err
	}
	r := results{}
	info := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), "=")
		if !ok {
			continue
		}
		if f, err := strconv.ParseFloat(v, 64); err == nil {
			r[k] = append(r[k], f)
		} else {
			info[k] = v
		}
	}
	var out strings.Builder
	fmt.Fprintf(&out, "%s\n", info["setup"])
	fmt.Fprintf(&out, "%-34s %12s %9s %9s %7s\n", "row", "requests/s", "p50 ms", "p99 ms", "errors")
	rows := []struct{ key, name string }{
		{"nginx_stock", "nginx proxy_cache, stock-ish"},
		{"nginx_tuned", "nginx proxy_cache, tuned"},
		{"ceiling", "bare fasthttp from a map (ceiling)"},
		{"l1", "harvest-proxy L1 hit"},
		{"l2", "harvest-proxy L2 hit (l1 off)"},
	}
	for _, row := range rows {
		rps, ok := r.get(row.key + "_rps")
		if !ok {
			fmt.Fprintf(&out, "%-34s %12s\n", row.name, "(not run)")
			continue
		}
		p50, _ := r.get(row.key + "_p50")
		p99, _ := r.get(row.key + "_p99")
		errs, _ := r.get(row.key + "_errors")
		fmt.Fprintf(&out, "%-34s %12.0f %9.3f %9.3f %7.0f\n", row.name, rps, p50, p99, errs)
	}
	fmt.Fprintf(&out, "\n%-40s %10s %10s  %s\n", "target", "measured", "goal", "")
	check := func(name string, v float64, ok bool, goal string, pass bool, unit string) {
		if !ok {
			fmt.Fprintf(&out, "%-40s %10s %10s  %s\n", name, "n/a", goal, "FAIL (not measured)")
			return
		}
		verdict := "FAIL"
		if pass {
			verdict = "PASS"
		}
		fmt.Fprintf(&out, "%-40s %10s %10s  %s\n", name, strconv.FormatFloat(v, 'f', 2, 64)+unit, goal, verdict)
	}
	ratio := func(a, b string) (float64, bool) {
		x, ok1 := r.get(a)
		y, ok2 := r.get(b)
		if !ok1 || !ok2 || y == 0 {
			return 0, false
		}
		return x / y, true
	}
	v, ok := ratio("l1_rps", "nginx_tuned_rps")
	check("L1 req/s / nginx tuned", v, ok, ">= 1.2", v >= 1.2, "x")
	v, ok = ratio("l1_rps", "ceiling_rps")
	check("L1 req/s / ceiling", v, ok, ">= 0.8", v >= 0.8, "x")
	v, ok = ratio("l1_p99", "ceiling_p99")
	check("L1 p99 / ceiling p99", v, ok, "<= 1.25", v <= 1.25, "x")
	v, ok = ratio("l2_rps", "nginx_tuned_rps")
	check("L2 req/s / nginx tuned", v, ok, ">= 0.6", v >= 0.6, "x")
	v, _ = ratio("nginx_tuned_rps", "nginx_stock_rps")
	fmt.Fprintf(&out, "%-40s %10s %10s  %s\n", "(nginx tuned / stock-ish, reference)", strconv.FormatFloat(v, 'f', 2, 64)+"x", "", "")
	v, ok = r.get("miss_added_ms")
	check("miss: median added latency", v, ok, "< 1 ms", v < 1, " ms")
	if d, ok := r.get("miss_direct_ms"); ok {
		fmt.Fprintf(&out, "%-40s %10s\n", "  (median direct read of the emulator)", strconv.FormatFloat(d, 'f', 2, 64)+" ms")
	}
	if o, ok := r.get("miss_proxy_own_ms"); ok {
		fmt.Fprintf(&out, "%-40s %10s\n", "  (mean proxy time outside the upstream)", strconv.FormatFloat(o, 'f', 2, 64)+" ms")
	}
	v, ok = r.get("mix_hit_pct")
	check("mix: reads answered from cache", v, ok, ">= 90%", v >= 90, "%")
	if u, ok := r.get("mix_unpaced_hit_pct"); ok {
		saved, _ := r.get("mix_unpaced_saved_pct")
		stale, _ := r.get("mix_unpaced_stale")
		fmt.Fprintf(&out, "%-40s %10s\n", "  (unpaced writes: hits, saved, stale)", fmt.Sprintf("%.1f%%, %.1f%%, %.0f", u, saved, stale))
	}
	v, ok = r.get("mix_saved_pct")
	check("mix: billed upstream reads saved", v, ok, ">= 85%", v >= 85, "%")
	v, ok = r.get("mix_stale")
	check("mix: stale reads", v, ok, "= 0", ok && v == 0, "")
	if n, ok := r.get("mix_reads"); ok {
		w, _ := r.get("mix_writes")
		ops, _ := r.get("mix_ops_per_s")
		fmt.Fprintf(&out, "%-40s %10s\n", "  (mix: reads, writes, ops/s)", fmt.Sprintf("%.0f, %.0f, %.0f", n, w, ops))
	}
	v, ok = ratio("emit_msgs_per_s", "bare_msgs_per_s")
	check("events: emitter / bare amqp confirms", v, ok, ">= 0.7", v >= 0.7, "x")
	_, err = os.Stdout.WriteString(out.String())
	return err
}
