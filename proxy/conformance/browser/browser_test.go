package browser

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/harvest-hub/edge/internal/testbed"
	"github.com/harvest-hub/edge/proxy"
	"github.com/harvest-hub/edge/proxy/proxytest"
	"github.com/harvest-hub/edge/rules"
)

func TestMain(m *testing.M) { os.Exit(testbed.Main(m)) }

// hostPort splits "127.0.0.1:port" for connectFirestoreEmulator.
func hostPort(t *testing.T, addr string) (string, int) {
	t.Helper()
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	port, err := strconv.Atoi(p)
	if err != nil {
		t.Fatal(err)
	}
	return h, port
}

// proxied is a harvest-proxy with the repository's sample rules.yaml (L1 only) in
// front of upstream: one per page, so each page's meter readings are its own. reg
// holds its metrics.
func proxied(t *testing.T, upstream string) (addr string, reg *prometheus.Registry) {
	t.Helper()
	outbox := t.TempDir()
	t.Setenv("HARVEST_OUTBOX_DIR", outbox) // rules.yaml's events.outbox_dir
	store, err := rules.NewStore("../../../rules.yaml", nil)
	if err != nil {
		t.Fatalf("rules: %v", err)
	}
	reg = prometheus.NewRegistry()
	return proxytest.Start(t, proxy.Options{Upstream: upstream, OutboxDir: filepath.Join(outbox, "o"), Rules: store, Registry: reg}).Addr, reg
}

// listenMessages is how many ListenResponses the proxy's own Listen channel server
// sent to browsers.
func listenMessages(t *testing.T, reg *prometheus.Registry) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "harvest_proxy_listen_channel_messages_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "direction" && l.GetValue() == "out" {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// TestWebSDKTransparent runs every SDK variant (lite, full, full long-polling) on a page
// of its own origin, once directly against the emulator and once through the proxy, and
// requires identical results, a clean page (no failed request, no 5xx, no console
// error) on both sides, and, for the lite SDK whose reads are cacheable REST calls,
// that repeating reads costs the upstream nothing.
func TestWebSDKTransparent(t *testing.T) {
	emu := testbed.Emulator(t)
	type pair struct{ direct, proxy Run }
	var pairs []pair
	var runs []Run
	meters := map[string]*testbed.Meter{}
	regs := map[string]*prometheus.Registry{}
	eh, ep := hostPort(t, emu.Addr)
	for _, sdk := range SDKs {
		// The lite SDK's proxy reaches the emulator through an upstream meter. The full
		// SDKs' talk to it directly: the emulator closes its connection after every
		// WebChannel answer, and the meter's net/http client, which cannot replay a
		// POST whose body it has forwarded, would answer 502 where that close races
		// with its next request (the proxy's own client does not reuse such a
		// connection, see proxy/upstream).
		upstream, meterURL := emu.URL, ""
		if sdk == "lite" {
			meter := testbed.NewMeter(t, emu.URL)
			upstream, meterURL = meter.URL(), MeterHandler(t, meter)
			meters[sdk+"/proxy"] = meter
		}
		addr, reg := proxied(t, upstream)
		regs[sdk+"/proxy"] = reg
		ph, pp := hostPort(t, addr)
		p := pair{
			direct: Run{Name: sdk + "/direct", SDK: sdk, Host: eh, Port: ep, ProjectID: emu.NewProject(t)},
			proxy:  Run{Name: sdk + "/proxy", SDK: sdk, Host: ph, Port: pp, ProjectID: emu.NewProject(t), MeterURL: meterURL},
		}
		pairs = append(pairs, p)
		runs = append(runs, p.direct, p.proxy)
	}
	results := Execute(t, 0, runs)
	RetryFailedDirect(t, 0, runs, results, emu.NewProject)
	for _, p := range pairs {
		p.direct = runs[slices.IndexFunc(runs, func(r Run) bool { return r.Name == p.direct.Name })]
		d, g := results[p.direct.Name], results[p.proxy.Name]
		CheckClean(t, p.direct.Name, d)
		CheckClean(t, p.proxy.Name, g)
		Compare(t, p.direct.Name, d, p.proxy.Name, g, p.direct.ProjectID, p.proxy.ProjectID)
		// The full SDK's listeners (getDoc and getDocs too) are served by the proxy's
		// own Listen channel, not passed through.
		if n := listenMessages(t, regs[p.proxy.Name]); p.proxy.SDK != "lite" && n == 0 {
			t.Errorf("%s: the proxy's Listen channel sent nothing: its listeners did not go through it", p.proxy.Name)
		}
		if m := meters[p.proxy.Name]; m != nil {
			if c := m.Snapshot(); c.Total == 0 {
				t.Errorf("%s never reached the upstream meter: the test is not testing the proxy", p.proxy.Name)
			}
			m, ok := g.Meter["repeat"]
			if !ok {
				t.Fatalf("%s: no meter reading for phase repeat", p.proxy.Name)
			}
			if m.After.Total != m.Before.Total || m.After.BilledReads != m.Before.BilledReads {
				t.Errorf("%s: repeating cached reads reached the upstream: %s", p.proxy.Name, meterDelta(m))
			}
		}
	}
}

func meterDelta(m MeterReading) string {
	d := map[string]int64{}
	for k, v := range m.After.Requests {
		if n := v - m.Before.Requests[k]; n != 0 {
			d[k] = n
		}
	}
	return fmt.Sprintf("%d requests %v, %d billed reads", m.After.Total-m.Before.Total, d, m.After.BilledReads-m.Before.BilledReads)
}
