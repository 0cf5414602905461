package bench

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/harvest-hub/edge/proxy/proxytest"

	"github.com/valyala/fasthttp"

	"github.com/harvest-hub/edge/internal/testbed"
	"github.com/harvest-hub/edge/proxy"
	"github.com/harvest-hub/edge/rules"
)

func TestMain(m *testing.M) { os.Exit(testbed.Main(m)) }

// Mix parameters: Zipf (s) over mixDocs documents, mixWriteFrac of operations are
// writes, mixWorkers concurrent clients; mixWarm operations warm the cache and are
// not counted, then mixOps are.
const (
	mixDocs      = 10000
	mixZipfS     = 1.1
	mixWriteFrac = 0.05
	mixWorkers   = 32
	mixWarm      = 100000 // most of the 10k documents read at least once: a production cache is warm
	mixOps       = 40000
)

// BenchmarkMix runs the realistic mix through one harvest-proxy (L1 + Redis, as in
// production) in front of the upstream meter in front of the emulator, and reports
// the fraction of reads answered from cache, the billed document reads saved (the
// meter's count against one billed read per read without the proxy), and stale reads:
// a read that began after a write of version v was acknowledged and answered an older
// version. With HARVEST_BENCH_RESULTS set it appends key=value lines there too.
// It runs its fixed workload once whatever b.N is: use -benchtime 1x.
//
// Two variants. "paced" (the target's figures, keys mix_*) respects Firestore's
// documented limit of about one sustained write per second per document: a write that
// draws a document written less than a second ago draws again (still by Zipf), so
// writes stay 5% of operations and still favour the popular documents, as a real
// marketplace's stock updates and orders would. "unpaced" (keys mix_unpaced_*) lets
// the hottest document take a write every few milliseconds, which real Firestore
// would not sustain; it shows how a pathological write hot spot costs hits, since
// every write must make its document a miss (read-your-writes).
func BenchmarkMix(b *testing.B) {
	b.Run("paced", func(b *testing.B) { benchmarkMix(b, true, "mix_") })
	b.Run("unpaced", func(b *testing.B) { benchmarkMix(b, false, "mix_unpaced_") })
}

// perDocumentWriteInterval is Firestore's sustained write limit for one document.
const perDocumentWriteInterval = time.Second

func benchmarkMix(b *testing.B, paced bool, key string) {
	emu := testbed.Emulator(b)
	project := emu.NewProject(b)
	root := "projects/" + project + "/databases/(default)/documents"
	seed(b, emu.URL, root)
	meter := testbed.NewMeter(b, emu.URL)
	base := startProxy(b, meter.URL())
	docsURL := base + "/v1/" + root + "/products/d"

	client := &fasthttp.Client{MaxConnsPerHost: mixWorkers * 2, ReadTimeout: 30 * time.Second, WriteTimeout: 30 * time.Second}
	var (
		acked                      [mixDocs]atomic.Int64 // last version a writer saw acknowledged
		lastWrite                  [mixDocs]atomic.Int64 // unix ns of the last write begun, for pacing
		locks                      [mixDocs]sync.Mutex   // one writer per document at a time
		version                    [mixDocs]int64        // under locks
		reads, hits, writes, stale atomic.Int64
		failed                     atomic.Value
	)
	for i := range version {
		version[i] = 1
		acked[i].Store(1)
	}
	op := func(r *rand.Rand, z *rand.Zipf) {
		d := int(z.Uint64())
		url := docsURL + strconv.Itoa(d)
		req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		defer fasthttp.ReleaseRequest(req)
		defer fasthttp.ReleaseResponse(resp)
		if r.Float64() < mixWriteFrac {
			if paced {
				d = pickWritable(r, z, &lastWrite)
				url = docsURL + strconv.Itoa(d)
			}
			locks[d].Lock()
			defer locks[d].Unlock()
			v := version[d] + 1
			req.Header.SetMethod("PATCH")
			req.SetRequestURI(url + "?updateMask.fieldPaths=version")
			req.Header.SetContentType("application/json")
			req.SetBodyString(`{"fields":{"version":{"integerValue":"` + strconv.FormatInt(v, 10) + `"}}}`)
			if err := client.Do(req, resp); err != nil || resp.StatusCode() != 200 {
				failed.Store(fmt.Sprintf("write %d: %v %d %s", d, err, resp.StatusCode(), resp.Body()))
				return
			}
			version[d] = v
			acked[d].Store(v)
			writes.Add(1)
			return
		}
		floor := acked[d].Load() // acknowledged before this read began
		req.SetRequestURI(url)
		if err := client.Do(req, resp); err != nil || resp.StatusCode() != 200 {
			failed.Store(fmt.Sprintf("read %d: %v %d %s", d, err, resp.StatusCode(), resp.Body()))
			return
		}
		reads.Add(1)
		switch string(resp.Header.Peek("X-Cache")) {
		case "HIT-L1", "HIT-L2", "STALE":
			hits.Add(1)
		}
		if v := versionOf(resp.Body()); v < floor {
			stale.Add(1)
			b.Errorf("stale read of d%d: version %d, %d was acknowledged before the read began (X-Cache %s)",
				d, v, floor, resp.Header.Peek("X-Cache"))
		}
	}
	run := func(n int) time.Duration {
		start := time.Now()
		var next atomic.Int64
		var wg sync.WaitGroup
		for w := range mixWorkers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r := rand.New(rand.NewPCG(uint64(w), uint64(n)))
				z := rand.NewZipf(r, mixZipfS, 1, mixDocs-1)
				for next.Add(1) <= int64(n) {
					op(r, z)
				}
			}()
		}
		wg.Wait()
		return time.Since(start)
	}
	b.ResetTimer()
	for b.Loop() {
		run(mixWarm)
		meter.Reset()
		reads.Store(0)
		hits.Store(0)
		writes.Store(0)
		elapsed := run(mixOps)
		if f := failed.Load(); f != nil {
			b.Fatal(f)
		}
		billed := meter.Snapshot().BilledReads
		n := reads.Load()
		res := map[string]float64{
			key + "reads":     float64(n),
			key + "writes":    float64(writes.Load()),
			key + "hit_pct":   100 * float64(hits.Load()) / float64(n),
			key + "saved_pct": 100 * (1 - float64(billed)/float64(n)),
			key + "stale":     float64(stale.Load()),
			key + "ops_per_s": float64(mixOps) / elapsed.Seconds(),
		}
		for _, k := range []string{"hit_pct", "saved_pct", "stale", "ops_per_s"} {
			b.ReportMetric(res[key+k], k)
		}
		writeResults(b, res)
	}
}

// pickWritable draws a document for a write by Zipf, redrawing (a few times, then
// uniformly) while the drawn one was written less than perDocumentWriteInterval ago,
// and claims it.
func pickWritable(r *rand.Rand, z *rand.Zipf, lastWrite *[mixDocs]atomic.Int64) int {
	for try := 0; ; try++ {
		d := int(z.Uint64())
		if try >= 8 {
			d = r.IntN(mixDocs)
		}
		now := time.Now().UnixNano()
		last := lastWrite[d].Load()
		if now-last >= int64(perDocumentWriteInterval) && lastWrite[d].CompareAndSwap(last, now) {
			return d
		}
	}
}

// versionOf reads the integer "version" field of a document's REST JSON (-1 if absent).
func versionOf(body []byte) int64 {
	var doc struct {
		Fields struct {
			Version struct {
				IntegerValue string `json:"integerValue"`
			} `json:"version"`
		} `json:"fields"`
	}
	if json.Unmarshal(body, &doc) != nil {
		return -1
	}
	v, err := strconv.ParseInt(doc.Fields.Version.IntegerValue, 10, 64)
	if err != nil {
		return -1
	}
	return v
}

func seed(b *testing.B, emuURL, root string) {
	b.Helper()
	for start := 0; start < mixDocs; start += 500 {
		var buf bytes.Buffer
		buf.WriteString(`{"writes":[`)
		for i := start; i < min(mixDocs, start+500); i++ {
			if i > start {
				buf.WriteByte(',')
			}
			fmt.Fprintf(&buf, `{"update":{"name":"%s/products/d%d","fields":{"version":{"integerValue":"1"},"name":{"stringValue":"item %d"},"price":{"integerValue":"%d"}}}}`, root, i, i, i%100)
		}
		buf.WriteString(`]}`)
		req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		req.Header.SetMethod("POST")
		req.SetRequestURI(emuURL + "/v1/" + root + ":commit")
		req.Header.SetContentType("application/json")
		req.SetBody(buf.Bytes())
		err := fasthttp.DoTimeout(req, resp, 60*time.Second)
		if err != nil || resp.StatusCode() != 200 {
			b.Fatalf("seeding: %v %d %s", err, resp.StatusCode(), resp.Body())
		}
		fasthttp.ReleaseRequest(req)
		fasthttp.ReleaseResponse(resp)
	}
}

// startProxy runs a harvest-proxy in this process, with Redis under its own prefix
// (deleted afterwards), and returns its base URL once it trusts its L1.
func startProxy(b *testing.B, upstream string) string {
	b.Helper()
	prefix := testbed.RedisPrefix(b, "bench") // before the proxy: its keys go after it stops
	yaml := fmt.Sprintf("cache:\n  key_prefix: %q\n  redis_timeout: 250ms\nrules:\n"+
		"  - match: /products/{p}\n    ttl: 30m\n    scope: shared\n", prefix)
	path := filepath.Join(b.TempDir(), "rules.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		b.Fatal(err)
	}
	store, err := rules.NewStore(path, nil)
	if err != nil {
		b.Fatal(err)
	}
	p := proxytest.Start(b, proxy.Options{
		Upstream: upstream, RedisURL: "redis://" + testbed.RedisAddr, Rules: store, OutboxDir: b.TempDir(),
	})
	for deadline := time.Now().Add(10 * time.Second); !p.Stats().Subscribed; {
		if time.Now().After(deadline) {
			b.Fatal("the proxy never subscribed to invalidations (is Redis at 127.0.0.1:6379 up?)")
		}
		time.Sleep(20 * time.Millisecond)
	}
	return "http://" + p.Addr
}

func writeResults(b *testing.B, res map[string]float64) {
	path := os.Getenv("HARVEST_BENCH_RESULTS")
	if path == "" {
		return
	}
	f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	for k, v := range res {
		fmt.Fprintf(f, "%s=%g\n", k, v)
	}
}
