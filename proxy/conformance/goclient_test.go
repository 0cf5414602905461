package conformance

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"cloud.google.com/go/firestore"
	"cloud.google.com/go/firestore/apiv1/firestorepb"
	"google.golang.org/api/googleapi"
	"google.golang.org/api/iterator"
	"google.golang.org/api/option"
	"google.golang.org/genproto/googleapis/type/latlng"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/harvest-hub/edge/internal/seed"
	"github.com/harvest-hub/edge/internal/testbed"
)

// goRun is one run of the Go scenarios: clients of one project at one address.
type goRun struct {
	project string
	// client is the official client as an app configures it for the emulator:
	// REST, no authentication.
	client *firestore.Client
	// admin adds the emulator's "Bearer owner", which listing documents and collection
	// ids need there.
	admin *firestore.Client
	log   *observer
}

func newGoRun(t *testing.T, addr, project string) *goRun {
	t.Helper()
	ctx := context.Background()
	obs := newObserver(t, addr, "")
	client, err := firestore.NewRESTClient(ctx, project, option.WithEndpoint("http://"+obs.addr),
		option.WithoutAuthentication())
	if err != nil {
		t.Fatalf("firestore.NewRESTClient(%s): %v", addr, err)
	}
	admin, err := firestore.NewRESTClient(ctx, project, option.WithEndpoint("http://"+newObserver(t, addr, "Bearer owner").addr),
		option.WithoutAuthentication())
	if err != nil {
		t.Fatalf("firestore.NewRESTClient(%s): %v", addr, err)
	}
	t.Cleanup(func() { client.Close(); admin.Close() })
	return &goRun{project: project, client: client, admin: admin, log: obs}
}

// newGoRunGRPC is newGoRun with the client's default transport, gRPC (HTTP/2 cleartext
// to an emulator host, as firestore.NewClient does under FIRESTORE_EMULATOR_HOST),
// straight to addr. The observer records each call's x-cache header metadata.
func newGoRunGRPC(t *testing.T, addr, project string) *goRun {
	t.Helper()
	ctx := context.Background()
	obs := &observer{addr: addr, seen: make(chan string, 1<<16)}
	record := func(md metadata.MD) {
		if v := md.Get("x-cache"); len(v) > 0 {
			select {
			case obs.seen <- v[0]:
			default:
			}
		}
	}
	opts := func(auth string) []option.ClientOption {
		o := []option.ClientOption{
			option.WithEndpoint(addr), option.WithoutAuthentication(),
			option.WithGRPCDialOption(grpc.WithTransportCredentials(insecure.NewCredentials())),
			option.WithGRPCDialOption(grpc.WithUnaryInterceptor(func(ctx context.Context, method string, req, reply any,
				cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
				var md metadata.MD
				err := invoker(ctx, method, req, reply, cc, append(opts, grpc.Header(&md))...)
				record(md)
				return err
			})),
			option.WithGRPCDialOption(grpc.WithStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc,
				cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
				cs, err := streamer(ctx, desc, cc, method, opts...)
				if err != nil {
					return nil, err
				}
				return &headerRecorder{ClientStream: cs, record: record}, nil
			})),
		}
		if auth != "" {
			o = append(o, option.WithGRPCDialOption(grpc.WithPerRPCCredentials(staticAuth(auth))))
		}
		return o
	}
	client, err := firestore.NewClient(ctx, project, opts("")...)
	if err != nil {
		t.Fatalf("firestore.NewClient(%s): %v", addr, err)
	}
	admin, err := firestore.NewClient(ctx, project, opts("Bearer owner")...)
	if err != nil {
		t.Fatalf("firestore.NewClient(%s): %v", addr, err)
	}
	t.Cleanup(func() { client.Close(); admin.Close() })
	return &goRun{project: project, client: client, admin: admin, log: obs}
}

// headerRecorder records a stream's header metadata once it has arrived.
type headerRecorder struct {
	grpc.ClientStream
	record func(metadata.MD)
	once   sync.Once
}

func (h *headerRecorder) RecvMsg(m any) error {
	err := h.ClientStream.RecvMsg(m)
	h.once.Do(func() {
		if md, herr := h.ClientStream.Header(); herr == nil {
			h.record(md)
		}
	})
	return err
}

// staticAuth sends one authorization value on every call, over cleartext (the
// emulator's "Bearer owner", as the Go client sends it to an emulator host).
type staticAuth string

func (a staticAuth) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": string(a)}, nil
}

func (staticAuth) RequireTransportSecurity() bool { return false }

// TestGoClientTransparentGRPC is TestGoClientTransparent with the Go client's default
// transport, gRPC: every scenario against the emulator directly and through the proxy's
// gRPC front, identical outcomes, and the proxied run both fills and hits the cache.
func TestGoClientTransparentGRPC(t *testing.T) {
	t.Parallel()
	st := newStack(t)
	var direct, proxied map[string]outcome
	var wg sync.WaitGroup
	for _, side := range []struct {
		addr string
		out  *map[string]outcome
	}{{st.emu.Addr, &direct}, {st.addr, &proxied}} {
		project := st.emu.NewProject(t)
		r := newGoRunGRPC(t, side.addr, project)
		seedDirect(t, st.emu, project)
		wg.Add(1)
		go func() {
			defer wg.Done()
			*side.out = runGoScenarios(r)
		}()
	}
	wg.Wait()
	compareRuns(t, goScenarioNames(), direct, proxied)
	if stats := st.proxy.Stats(); stats.Requests["HIT-L1"]+stats.Requests["HIT-L2"] == 0 || stats.Requests["MISS"] == 0 {
		t.Errorf("the proxied gRPC run should both fill and hit the cache; proxy results: %v", stats.Requests)
	}
	if c := st.meter.Snapshot(); c.Requests["BatchGetDocuments"] == 0 || c.Requests["Commit"] == 0 {
		t.Errorf("the proxied run did not reach the upstream over gRPC: %v", c.Requests)
	}
}

// outcome is what one scenario observed: a normalised JSON value, or why the scenario
// itself went wrong (an unexpected error, a broken expectation).
type outcome struct {
	Result string
	Failed string
}

type goScenario struct {
	name string
	run  func(ctx context.Context, r *goRun) (any, error)
}

// TestGoClientTransparent runs every Go scenario against the emulator and through the
// proxy, in two projects seeded alike, and requires identical outcomes.
func TestGoClientTransparent(t *testing.T) {
	t.Parallel()
	st := newStack(t)
	var direct, proxied map[string]outcome
	var wg sync.WaitGroup
	for _, side := range []struct {
		addr string
		out  *map[string]outcome
	}{{st.emu.Addr, &direct}, {st.addr, &proxied}} {
		project := st.emu.NewProject(t)
		r := newGoRun(t, side.addr, project)
		seedDirect(t, st.emu, project)
		wg.Add(1)
		go func() {
			defer wg.Done()
			*side.out = runGoScenarios(r)
		}()
	}
	wg.Wait()
	compareRuns(t, goScenarioNames(), direct, proxied)
	if stats := st.proxy.Stats(); stats.Requests["HIT-L1"]+stats.Requests["HIT-L2"] == 0 || stats.Requests["MISS"] == 0 {
		t.Errorf("the proxied run should both fill and hit the cache; proxy results: %v", stats.Requests)
	}
}

// seedDirect loads the Harvest Hub sample into project straight into the emulator, so
// the proxy starts cold.
func seedDirect(t *testing.T, emu *testbed.Emu, project string) {
	t.Helper()
	ctx := context.Background()
	c, err := firestore.NewRESTClient(ctx, project, option.WithEndpoint(emu.URL), option.WithoutAuthentication())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := seed.Load(ctx, c, seed.Sample()); err != nil {
		t.Fatalf("seeding %s: %v", project, err)
	}
}

func runGoScenarios(r *goRun) map[string]outcome {
	out := map[string]outcome{}
	for _, sc := range goScenarios() {
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		v, err := sc.run(ctx, r)
		cancel()
		if err != nil {
			out[sc.name] = outcome{Failed: err.Error()}
			continue
		}
		b, err := json.Marshal(v)
		if err != nil {
			out[sc.name] = outcome{Failed: "marshal: " + err.Error()}
			continue
		}
		out[sc.name] = outcome{Result: string(b)}
	}
	return out
}

func goScenarioNames() []string {
	var names []string
	for _, sc := range goScenarios() {
		names = append(names, sc.name)
	}
	return names
}

// compareRuns fails for every scenario that failed in either run, or whose outcomes
// differ, naming the scenario and where the JSON first differs.
func compareRuns(t *testing.T, names []string, direct, proxied map[string]outcome) {
	t.Helper()
	for _, name := range names {
		d, dok := direct[name]
		p, pok := proxied[name]
		switch {
		case !dok || !pok:
			t.Errorf("%s: missing outcome (direct %v, proxied %v)", name, dok, pok)
		case d.Failed != "":
			t.Errorf("%s: failed against the emulator directly (the scenario or the test bed is wrong): %s", name, d.Failed)
		case p.Failed != "":
			t.Errorf("%s: failed through the proxy but not directly: %s\n  direct result: %s", name, p.Failed, clip(d.Result, 600))
		case d.Result != p.Result:
			t.Errorf("%s: the proxy changed what the client sees\n%s", name, firstDiff(d.Result, p.Result))
		default:
			t.Logf("%s: identical (%d bytes)", name, len(d.Result))
		}
	}
}

func firstDiff(a, b string) string {
	i := 0
	for i < len(a) && i < len(b) && a[i] == b[i] {
		i++
	}
	from := max(0, i-150)
	return fmt.Sprintf("  at byte %d\n  direct:  …%s\n  proxied: …%s", i, clip(a[from:], 400), clip(b[from:], 400))
}

func clip(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// ---- normalisation ----

// rel is a document path relative to the database root ("products/p1"), the same in
// every project.
func rel(ref *firestore.DocumentRef) string {
	_, p, _ := strings.Cut(ref.Path, "/documents/")
	return p
}

type docOut struct {
	Path   string         `json:"path"`
	Exists bool           `json:"exists"`
	Data   map[string]any `json:"data,omitempty"`
}

func doc(s *firestore.DocumentSnapshot) docOut {
	d := docOut{Path: rel(s.Ref), Exists: s.Exists()}
	if s.Exists() {
		d.Data = normMap(s.Data())
	}
	return d
}

func docs(ss []*firestore.DocumentSnapshot) []docOut {
	out := make([]docOut, 0, len(ss))
	for _, s := range ss {
		out = append(out, doc(s))
	}
	return out
}

func normMap(m map[string]any) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = norm(v)
	}
	return out
}

// serverTimeWindow: a timestamp this close to now was set by the server while the test
// ran (serverTimestamp), and differs between runs; the sample's timestamps are fixed.
const serverTimeWindow = 30 * time.Minute

// norm turns a field value into JSON that keeps its Firestore type.
func norm(v any) any {
	switch x := v.(type) {
	case nil:
		return map[string]any{"null": true}
	case bool:
		return map[string]any{"bool": x}
	case int64:
		return map[string]any{"int": x}
	case float64:
		return map[string]any{"double": x}
	case string:
		return map[string]any{"string": x}
	case []byte:
		return map[string]any{"bytes": base64.StdEncoding.EncodeToString(x)}
	case time.Time:
		if d := time.Since(x); d < serverTimeWindow && d > -serverTimeWindow {
			return map[string]any{"time": "<server time>"}
		}
		return map[string]any{"time": x.UTC().Format(time.RFC3339Nano)}
	case *latlng.LatLng:
		return map[string]any{"geo": []float64{x.GetLatitude(), x.GetLongitude()}}
	case *firestore.DocumentRef:
		return map[string]any{"ref": rel(x)}
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = norm(e)
		}
		return map[string]any{"array": out}
	case map[string]any:
		return map[string]any{"map": normMap(x)}
	case *firestorepb.Value:
		b, _ := protojson.Marshal(x)
		var j any
		_ = json.Unmarshal(b, &j)
		return j
	}
	return map[string]any{"unknown": fmt.Sprintf("%T %v", v, v)}
}

// code describes a client error as the client reports it: the gRPC code it maps the
// error to and, for an HTTP error, the status and the Firestore status name of the
// answer.
func code(err error) string {
	if err == nil {
		return "OK"
	}
	c := "grpc=" + status.Code(err).String()
	var g *googleapi.Error
	if errors.As(err, &g) {
		var body struct {
			Error struct {
				Status string `json:"status"`
			} `json:"error"`
		}
		_ = json.Unmarshal([]byte(g.Body), &body)
		c += fmt.Sprintf(" http=%d status=%s", g.Code, body.Error.Status)
	}
	return c
}

// expectCode returns the observed code, or an error when the error is not want: a
// gRPC status with that code, or an HTTP error whose Firestore status is its name.
func expectCode(err error, want codes.Code) (string, error) {
	c := code(err)
	name := strings.ToUpper(regexp.MustCompile(`([a-z])([A-Z])`).ReplaceAllString(want.String(), "${1}_${2}"))
	if status.Code(err) != want && !strings.Contains(c, "status="+name) {
		return "", fmt.Errorf("want %v (%s), got %s (%v)", want, name, c, err)
	}
	return c, nil
}

func get(ctx context.Context, r *goRun, path string) (docOut, error) {
	s, err := r.client.Doc(path).Get(ctx)
	if err != nil && status.Code(err) != codes.NotFound {
		return docOut{}, fmt.Errorf("get %s: %w", path, err)
	}
	return doc(s), nil
}

func getAll(ctx context.Context, r *goRun, paths ...string) ([]docOut, error) {
	var refs []*firestore.DocumentRef
	for _, p := range paths {
		refs = append(refs, r.client.Doc(p))
	}
	ss, err := r.client.GetAll(ctx, refs)
	if err != nil {
		return nil, fmt.Errorf("getAll: %w", err)
	}
	return docs(ss), nil
}

func query(ctx context.Context, q firestore.Query) ([]docOut, error) {
	ss, err := q.Documents(ctx).GetAll()
	if err != nil {
		return nil, err
	}
	return docs(ss), nil
}

// queries runs each named query and keeps every result; a query that fails or finds
// nothing (each is chosen to find something in the sample) is an error.
func queries(ctx context.Context, qs map[string]firestore.Query) (any, error) {
	out := map[string]any{}
	names := make([]string, 0, len(qs))
	for name := range qs {
		names = append(names, name)
	}
	sort.Strings(names) // the same order in both runs
	for _, name := range names {
		res, err := query(ctx, qs[name])
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		if len(res) == 0 {
			return nil, fmt.Errorf("%s: found nothing; the scenario wants a non-empty answer", name)
		}
		out[name] = res
	}
	return out, nil
}

func priceOf(s *firestore.DocumentSnapshot) any {
	p, _ := s.DataAt("price")
	return p
}

func written(_ *firestore.WriteResult, err error) error { return err }

// ---- the scenarios ----

var writtenTime = time.Date(2026, 5, 4, 3, 2, 1, 123456000, time.UTC)

func goScenarios() []goScenario {
	return []goScenario{
		{"get existing documents", func(ctx context.Context, r *goRun) (any, error) {
			return getAll(ctx, r, "products/prod-001", "farmers/farmer-01", "farmers/farmer-01/products/prod-001",
				"users/user-01", "users/user-01/orders/order-01-1", "sessions/sess-01")
		}},
		{"get missing document is NotFound", func(ctx context.Context, r *goRun) (any, error) {
			s, err := r.client.Doc("products/no-such-product").Get(ctx)
			c, err := expectCode(err, codes.NotFound)
			if err != nil {
				return nil, err
			}
			return map[string]any{"code": c, "exists": s.Exists()}, nil
		}},
		{"set every value type, then get", func(ctx context.Context, r *goRun) (any, error) {
			before, err := get(ctx, r, "products/new-1") // a cached miss must not outlive the set
			if err != nil {
				return nil, err
			}
			data := map[string]any{
				"name": "Typed", "price": 1.5, "stock": int64(3), "organic": true, "none": nil,
				"bytes": []byte{0, 1, 2, 255}, "at": writtenTime,
				"where":  &latlng.LatLng{Latitude: 45.75, Longitude: 4.85},
				"farmer": r.client.Doc("farmers/farmer-01"),
				"tags":   []any{"a", int64(2), 3.5, map[string]any{"deep": []any{"x"}}},
				"nested": map[string]any{"a": int64(1), "b": map[string]any{"c": "d"}},
				"whole":  3.0, "negZero": 0.0, "big": int64(1) << 62, "unicode": "äö €😀",
			}
			if err := written(r.client.Doc("products/new-1").Set(ctx, data)); err != nil {
				return nil, err
			}
			after, err := get(ctx, r, "products/new-1")
			return []any{before, after}, err
		}},
		{"set with merge", func(ctx context.Context, r *goRun) (any, error) {
			ref := r.client.Doc("products/new-1")
			if err := written(ref.Set(ctx, map[string]any{"stock": int64(4), "nested": map[string]any{"b": map[string]any{"e": "f"}}}, firestore.MergeAll)); err != nil {
				return nil, err
			}
			a, err := get(ctx, r, "products/new-1")
			if err != nil {
				return nil, err
			}
			if err := written(ref.Set(ctx, map[string]any{"name": "Merged", "price": 9.0, "ignored": "x"},
				firestore.Merge([]string{"name"}, []string{"price"}))); err != nil {
				return nil, err
			}
			b, err := get(ctx, r, "products/new-1")
			return []any{a, b}, err
		}},
		{"update field paths, nested and deleted", func(ctx context.Context, r *goRun) (any, error) {
			err := written(r.client.Doc("products/new-1").Update(ctx, []firestore.Update{
				{Path: "nested.a", Value: int64(10)},
				{Path: "nested.b.c", Value: firestore.Delete},
				{FieldPath: firestore.FieldPath{"odd.key", "with space"}, Value: "x"},
				{Path: "organic", Value: firestore.Delete},
				{Path: "stock", Value: int64(5)},
			}))
			if err != nil {
				return nil, err
			}
			return get(ctx, r, "products/new-1")
		}},
		{"delete, then get", func(ctx context.Context, r *goRun) (any, error) {
			if _, err := get(ctx, r, "products/new-1"); err != nil { // cached first
				return nil, err
			}
			if err := written(r.client.Doc("products/new-1").Delete(ctx)); err != nil {
				return nil, err
			}
			after, err := get(ctx, r, "products/new-1")
			if err != nil {
				return nil, err
			}
			again := written(r.client.Doc("products/new-1").Delete(ctx)) // deleting a missing doc succeeds
			return map[string]any{"after": after, "deleteAgain": code(again)}, nil
		}},
		{"add with an automatic id", func(ctx context.Context, r *goRun) (any, error) {
			ref, _, err := r.client.Collection("users/user-01/orders").Add(ctx, map[string]any{"status": "placed", "total": 12.5})
			if err != nil {
				return nil, err
			}
			s, err := ref.Get(ctx)
			if err != nil {
				return nil, err
			}
			orders, err := query(ctx, r.client.Collection("users/user-01/orders").Where("total", "==", 12.5))
			if err != nil {
				return nil, err
			}
			for i := range orders {
				orders[i].Path = strings.Replace(orders[i].Path, ref.ID, "<auto id>", 1)
			}
			return map[string]any{"idLen": len(ref.ID), "data": normMap(s.Data()), "query": orders}, nil
		}},
		{"transforms", func(ctx context.Context, r *goRun) (any, error) {
			ref := r.client.Doc("products/prod-002")
			if _, err := ref.Get(ctx); err != nil { // cached before the transform
				return nil, err
			}
			err := written(ref.Update(ctx, []firestore.Update{
				{Path: "touchedAt", Value: firestore.ServerTimestamp},
				{Path: "stock", Value: firestore.Increment(2)},
				{Path: "price", Value: firestore.Increment(0.25)},
				{Path: "views", Value: firestore.Increment(1)},
				{Path: "tags", Value: firestore.ArrayUnion("transformed", "local")},
			}))
			if err != nil {
				return nil, err
			}
			a, err := get(ctx, r, "products/prod-002")
			if err != nil {
				return nil, err
			}
			if err := written(ref.Update(ctx, []firestore.Update{{Path: "tags", Value: firestore.ArrayRemove("transformed")}})); err != nil {
				return nil, err
			}
			b, err := get(ctx, r, "products/prod-002")
			if _, ok := a.Data["touchedAt"]; !ok {
				return nil, errors.New("serverTimestamp did not set touchedAt")
			}
			return []any{a, b}, err
		}},
		{"write batch", func(ctx context.Context, r *goRun) (any, error) {
			paths := []string{"products/batch-1", "products/prod-003", "farmers/farmer-02", "products/prod-004", "farmers/farmer-02/products/prod-002"}
			before, err := getAll(ctx, r, paths...)
			if err != nil {
				return nil, err
			}
			//lint:ignore SA1019 WriteBatch is deprecated but still what apps use; the proxy must carry it.
			b := r.client.Batch()
			b.Create(r.client.Doc(paths[0]), map[string]any{"name": "Batched", "price": 2.0})
			b.Set(r.client.Doc(paths[1]), map[string]any{"name": "Replaced"})
			b.Update(r.client.Doc(paths[2]), []firestore.Update{{Path: "rating", Value: 4.9}})
			b.Delete(r.client.Doc(paths[3]))
			b.Set(r.client.Doc(paths[4]), map[string]any{"stock": int64(0)}, firestore.MergeAll)
			res, err := b.Commit(ctx)
			if err != nil {
				return nil, err
			}
			after, err := getAll(ctx, r, paths...)
			return map[string]any{"results": len(res), "before": before, "after": after}, err
		}},
		{"10 concurrent transactions increment one counter", func(ctx context.Context, r *goRun) (any, error) {
			ref := r.client.Doc("products/counter")
			if err := written(ref.Set(ctx, map[string]any{"n": int64(0)})); err != nil {
				return nil, err
			}
			if _, err := ref.Get(ctx); err != nil { // cached at 0
				return nil, err
			}
			var wg sync.WaitGroup
			errs := make([]error, 10)
			for i := range errs {
				wg.Go(func() {
					errs[i] = r.client.RunTransaction(ctx, func(ctx context.Context, tx *firestore.Transaction) error {
						s, err := tx.Get(ref)
						if err != nil {
							return err
						}
						n, err := s.DataAt("n")
						if err != nil {
							return err
						}
						return tx.Set(ref, map[string]any{"n": n.(int64) + 1})
					}, firestore.MaxAttempts(100))
				})
			}
			wg.Wait()
			if err := errors.Join(errs...); err != nil {
				return nil, err
			}
			s, err := get(ctx, r, "products/counter")
			if err != nil {
				return nil, err
			}
			if n := s.Data["n"]; fmt.Sprint(n) != fmt.Sprint(map[string]any{"int": int64(10)}) {
				return nil, fmt.Errorf("counter after 10 increments: %v", n)
			}
			return s, nil
		}},
		{"transaction reads, writes and sees its own precondition", func(ctx context.Context, r *goRun) (any, error) {
			err := r.client.RunTransaction(ctx, func(ctx context.Context, tx *firestore.Transaction) error {
				ss, err := tx.GetAll([]*firestore.DocumentRef{r.client.Doc("farmers/farmer-03"), r.client.Doc("farmers/nobody")})
				if err != nil {
					return err
				}
				if !ss[0].Exists() || ss[1].Exists() {
					return fmt.Errorf("transaction read: exists %v %v", ss[0].Exists(), ss[1].Exists())
				}
				q, err := tx.Documents(r.client.Collection("farmers/farmer-03/products").Where("category", "==", "dairy")).GetAll()
				if err != nil {
					return err
				}
				return tx.Update(ss[0].Ref, []firestore.Update{{Path: "dairyCount", Value: int64(len(q))}})
			})
			if err != nil {
				return nil, err
			}
			failed := r.client.RunTransaction(ctx, func(ctx context.Context, tx *firestore.Transaction) error {
				return tx.Update(r.client.Doc("farmers/nobody"), []firestore.Update{{Path: "x", Value: 1}})
			}, firestore.MaxAttempts(1))
			after, err := get(ctx, r, "farmers/farmer-03")
			return map[string]any{"after": after, "failedTx": code(failed)}, err
		}},
		{"queries with every operator", func(ctx context.Context, r *goRun) (any, error) {
			p := r.client.Collection("products")
			f1 := p.Where("farmerId", "==", "farmer-01") // every product of farmer-01 is fruit
			cheap := p.Where("price", "<", 4.0)
			return queries(ctx, map[string]firestore.Query{
				"==":                 p.Where("category", "==", "honey"),
				"!=":                 cheap.Where("category", "!=", "fruit"),
				"<":                  f1.Where("price", "<", 5.0),
				"<=":                 f1.Where("price", "<=", 5.0),
				">":                  f1.Where("price", ">", 15.0),
				">=":                 f1.Where("stock", ">=", int64(150)),
				"array-contains":     p.Where("tags", "array-contains", "local"),
				"array-contains-any": cheap.Where("tags", "array-contains-any", []any{"vegan", "bulk"}),
				"in":                 cheap.Where("category", "in", []any{"eggs", "honey"}),
				"not-in":             cheap.Where("category", "not-in", []any{"fruit", "dairy", "eggs"}),
				"and/or":             p.WhereEntity(firestore.OrFilter{Filters: []firestore.EntityFilter{firestore.PropertyFilter{Path: "category", Operator: "==", Value: "eggs"}, firestore.AndFilter{Filters: []firestore.EntityFilter{firestore.PropertyFilter{Path: "price", Operator: ">", Value: 19.0}, firestore.PropertyFilter{Path: "organic", Operator: "==", Value: true}}}}}),
				"select":             f1.Select("name", "price").OrderBy("name", firestore.Asc),
			})
		}},
		{"orderBy, limit and limitToLast", func(ctx context.Context, r *goRun) (any, error) {
			p := r.client.Collection("products")
			return queries(ctx, map[string]firestore.Query{
				"price desc limit 5":     p.OrderBy("price", firestore.Desc).Limit(5),
				"two orders":             p.OrderBy("category", firestore.Asc).OrderBy("price", firestore.Desc).Limit(7),
				"limitToLast 3":          p.OrderBy("price", firestore.Asc).LimitToLast(3),
				"offset":                 p.OrderBy("price", firestore.Asc).Offset(10).Limit(3),
				"by document id":         p.OrderBy(firestore.DocumentID, firestore.Asc).Limit(4),
				"where + order + limit":  p.Where("category", "==", "fruit").OrderBy("stock", firestore.Desc).Limit(4),
				"nested collection":      r.client.Collection("farmers/farmer-04/products").OrderBy("name", firestore.Asc).Limit(6),
				"user orders by created": r.client.Collection("users/user-02/orders").OrderBy("createdAt", firestore.Desc),
			})
		}},
		{"cursors with values and snapshots", func(ctx context.Context, r *goRun) (any, error) {
			// A fresh base per query: the client's Query shares slices between derived
			// queries, and running a LimitToLast query reverses them in place.
			q := func() firestore.Query {
				return r.client.Collection("farmers/farmer-05/products").OrderBy("price", firestore.Asc)
			}
			all, err := q().Documents(ctx).GetAll()
			if err != nil || len(all) < 10 {
				return nil, fmt.Errorf("cursor base query: %d documents, %v", len(all), err)
			}
			mid := all[len(all)/2]
			price := priceOf(mid)
			return queries(ctx, map[string]firestore.Query{
				"startAt value":      q().StartAt(price).Limit(3),
				"startAfter value":   q().StartAfter(price).Limit(3),
				"endBefore value":    q().EndBefore(price),
				"endAt value":        q().EndAt(price),
				"startAt snapshot":   q().StartAt(mid).Limit(3),
				"startAfter snap":    q().StartAfter(mid).Limit(3),
				"endBefore snapshot": q().EndBefore(mid),
				"between values":     q().StartAfter(priceOf(all[2])).EndAt(priceOf(all[6])),
				"between snapshots":  q().StartAfter(all[2]).EndAt(all[6]),
				"limitToLast cursor": q().EndBefore(mid).LimitToLast(2),
				"doc id cursor":      r.client.Collection("products").OrderBy(firestore.DocumentID, firestore.Asc).StartAfter("prod-290"),
			})
		}},
		{"collection group queries", func(ctx context.Context, r *goRun) (any, error) {
			return queries(ctx, map[string]firestore.Query{
				"products of farmer-02": r.client.CollectionGroup("products").Where("farmerId", "==", "farmer-02").OrderBy("price", firestore.Asc),
				"orders placed":         r.client.CollectionGroup("orders").Where("status", "==", "placed").OrderBy("total", firestore.Desc).Limit(10),
			})
		}},
		{"aggregations count, sum, average", func(ctx context.Context, r *goRun) (any, error) {
			out := map[string]any{}
			for name, q := range map[string]firestore.Query{
				"fruit":   r.client.Collection("products").Where("category", "==", "fruit"),
				"farmer":  r.client.Collection("farmers/farmer-06/products").Query,
				"group":   r.client.CollectionGroup("products").Where("organic", "==", true),
				"empty":   r.client.Collection("products").Where("category", "==", "none"),
				"orders2": r.client.Collection("users/user-02/orders").Query,
			} {
				count, err := q.NewAggregationQuery().WithCount("n").Get(ctx)
				if err != nil {
					return nil, fmt.Errorf("%s count: %w", name, err)
				}
				all, err := q.NewAggregationQuery().WithCount("n").WithSum("price", "s").WithAvg("price", "a").Get(ctx)
				if err != nil {
					return nil, fmt.Errorf("%s sum/avg: %w", name, err)
				}
				out[name] = []any{norm(map[string]any(count)), norm(map[string]any(all))}
			}
			// A write must show in the next aggregation.
			if err := written(r.client.Doc("products/agg-extra").Set(ctx, map[string]any{"category": "fruit", "price": 100.0})); err != nil {
				return nil, err
			}
			fruit := r.client.Collection("products").Where("category", "==", "fruit")
			after, err := fruit.NewAggregationQuery().
				WithCount("n").WithSum("price", "s").WithAvg("price", "a").Get(ctx)
			if err != nil {
				return nil, err
			}
			out["fruit after write"] = norm(map[string]any(after))
			return out, nil
		}},
		{"list documents and collection ids", func(ctx context.Context, r *goRun) (any, error) {
			out := map[string]any{}
			for _, coll := range []string{"farmers", "farmers/farmer-07/products", "users/user-03/orders"} {
				refs, err := r.admin.Collection(coll).DocumentRefs(ctx).GetAll()
				if err != nil {
					return nil, fmt.Errorf("list %s: %w", coll, err)
				}
				var paths []string
				for _, ref := range refs {
					paths = append(paths, rel(ref))
				}
				out["docs "+coll] = paths
			}
			for _, parent := range []*firestore.DocumentRef{nil, r.admin.Doc("farmers/farmer-07"), r.admin.Doc("users/user-03")} {
				var it *firestore.CollectionIterator
				name := "root"
				if parent == nil {
					it = r.admin.Collections(ctx)
				} else {
					it, name = parent.Collections(ctx), rel(parent)
				}
				var ids []string
				for {
					c, err := it.Next()
					if errors.Is(err, iterator.Done) {
						break
					}
					if err != nil {
						return nil, fmt.Errorf("collection ids of %s: %w", name, err)
					}
					ids = append(ids, c.ID)
				}
				sort.Strings(ids)
				out["collections "+name] = ids
			}
			// A new subcollection shows in the next listing.
			if err := written(r.client.Doc("farmers/farmer-07/reviews/r1").Set(ctx, map[string]any{"stars": int64(5)})); err != nil {
				return nil, err
			}
			ids, err := r.admin.Doc("farmers/farmer-07").Collections(ctx).GetAll()
			if err != nil {
				return nil, err
			}
			var names []string
			for _, c := range ids {
				names = append(names, c.ID)
			}
			sort.Strings(names)
			out["collections after write"] = names
			refs, err := r.admin.Collection("farmers/farmer-07/reviews").DocumentRefs(ctx).GetAll()
			if err != nil {
				return nil, err
			}
			out["reviews after write"] = len(refs)
			return out, nil
		}},
		{"error codes", func(ctx context.Context, r *goRun) (any, error) {
			out := map[string]any{}
			var err error
			_, e := r.client.Doc("products/prod-005").Create(ctx, map[string]any{"x": 1})
			if out["create existing"], err = expectCode(e, codes.AlreadyExists); err != nil {
				return nil, err
			}
			_, e = r.client.Doc("products/missing").Update(ctx, []firestore.Update{{Path: "x", Value: 1}})
			if out["update missing"], err = expectCode(e, codes.NotFound); err != nil {
				return nil, err
			}
			_, e = r.client.Doc("products/prod-005").Update(ctx, []firestore.Update{{Path: "x", Value: 1}},
				firestore.LastUpdateTime(time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC)))
			if out["update stale lastUpdateTime"], err = expectCode(e, codes.FailedPrecondition); err != nil {
				return nil, err
			}
			_, e = r.client.Doc("products/prod-005").Delete(ctx, firestore.LastUpdateTime(time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC)))
			if out["delete stale lastUpdateTime"], err = expectCode(e, codes.FailedPrecondition); err != nil {
				return nil, err
			}
			_, e = r.client.Doc("products/__reserved__").Set(ctx, map[string]any{"x": 1})
			out["reserved id"] = code(e)
			_, e = r.client.Collection("products").Where("a", "in", []any{}).Documents(ctx).GetAll()
			out["empty in"] = code(e)
			// None of the failed writes changed anything.
			after, err := get(ctx, r, "products/prod-005")
			out["after"] = after
			return out, err
		}},
		{"reads see the writes before them", func(ctx context.Context, r *goRun) (any, error) {
			q := r.client.Collection("products").Where("category", "==", "herbs").OrderBy("price", firestore.Asc).Limit(3)
			g := r.client.CollectionGroup("products").Where("category", "==", "herbs").OrderBy("price", firestore.Asc).Limit(3)
			var steps []any
			snap := func() error {
				a, err := query(ctx, q)
				if err != nil {
					return err
				}
				b, err := query(ctx, g)
				if err != nil {
					return err
				}
				c, err := getAll(ctx, r, "products/prod-007", "farmers/farmer-07/products/prod-007")
				steps = append(steps, []any{a, b, c})
				return err
			}
			if err := snap(); err != nil {
				return nil, err
			}
			for _, path := range []string{"products/prod-007", "farmers/farmer-07/products/prod-007"} {
				if err := written(r.client.Doc(path).Update(ctx, []firestore.Update{{Path: "price", Value: 0.01}})); err != nil {
					return nil, err
				}
				if err := snap(); err != nil {
					return nil, err
				}
			}
			if err := written(r.client.Doc("products/prod-007").Delete(ctx)); err != nil {
				return nil, err
			}
			if err := snap(); err != nil {
				return nil, err
			}
			return steps, nil
		}},
	}
}

// TestGoClientReadsFromCache checks through the meter that a repeated identical read by
// the Go client is answered by the proxy without reaching the upstream, and that a write
// through the proxy is seen by the next read.
func TestGoClientReadsFromCache(t *testing.T) {
	t.Parallel()
	st := newStack(t)
	project := st.emu.NewProject(t)
	seedDirect(t, st.emu, project)
	r := newGoRun(t, st.addr, project)
	ctx := context.Background()
	type read struct {
		name, method string
		do           func() (any, error)
	}
	reads := []read{
		{"get", "batchGet", func() (any, error) { return get(ctx, r, "products/prod-010") }},
		{"getAll", "batchGet", func() (any, error) { return getAll(ctx, r, "farmers/farmer-01", "products/prod-011") }},
		{"query", "runQuery", func() (any, error) {
			return query(ctx, r.client.Collection("products").Where("category", "==", "honey").OrderBy("price", firestore.Asc))
		}},
		{"count", "runAggregationQuery", func() (any, error) {
			q := r.client.Collection("products").Where("category", "==", "eggs")
			res, err := q.NewAggregationQuery().WithCount("n").Get(ctx)
			return norm(map[string]any(res)), err
		}},
	}
	for _, rd := range reads {
		st.meter.Reset()
		r.log.drain()
		first, err := rd.do()
		if err != nil {
			t.Fatalf("%s: %v", rd.name, err)
		}
		if n := st.meter.Snapshot().Requests[rd.method]; n != 1 {
			t.Fatalf("%s: the first read made %d %s requests upstream, want 1 (%v)", rd.name, n, rd.method, st.meter.Snapshot().Requests)
		}
		second, err := rd.do()
		if err != nil {
			t.Fatalf("%s again: %v", rd.name, err)
		}
		if c := st.meter.Snapshot(); c.Total != 1 {
			t.Errorf("%s: the repeated identical read reached the upstream (%v), want it served from cache", rd.name, c.Requests)
		}
		xc := r.log.drain()
		if len(xc) != 2 || xc[0] != "MISS" || !strings.HasPrefix(xc[1], "HIT") {
			t.Errorf("%s: X-Cache of the two reads = %q, want [MISS HIT-…]", rd.name, xc)
		}
		a, _ := json.Marshal(first)
		b, _ := json.Marshal(second)
		if string(a) != string(b) {
			t.Errorf("%s: the cached answer differs from the first:\n%s", rd.name, firstDiff(string(a), string(b)))
		}
	}

	// A group query over products may return products nested anywhere (under
	// users/{u}, say), which the sample's last rule (/{document=**}, ttl 0) does not
	// cache: so the group query is not cached either (a shared rule must not vouch
	// for documents it does not govern).
	st.meter.Reset()
	r.log.drain()
	for range 2 {
		if _, err := query(ctx, r.client.CollectionGroup("products").Where("farmerId", "==", "farmer-03").Limit(5)); err != nil {
			t.Fatalf("group query: %v", err)
		}
	}
	if n := st.meter.Snapshot().Requests["runQuery"]; n != 2 {
		t.Errorf("group query: %d runQuery requests upstream for two reads, want 2 (not cached)", n)
	}
	if xc := r.log.drain(); len(xc) != 2 || xc[0] != "BYPASS" || xc[1] != "BYPASS" {
		t.Errorf("group query: X-Cache of the two reads = %q, want [BYPASS BYPASS]", xc)
	}

	// Read-your-writes through the real client.
	if _, err := r.client.Doc("products/prod-010").Update(ctx, []firestore.Update{{Path: "price", Value: 42.42}}); err != nil {
		t.Fatal(err)
	}
	st.meter.Reset()
	s, err := r.client.Doc("products/prod-010").Get(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if p, _ := s.DataAt("price"); p != 42.42 {
		t.Errorf("after updating products/prod-010 price to 42.42 through the proxy, a read through it returns price %v", p)
	}
	if n := st.meter.Snapshot().Requests["batchGet"]; n != 1 {
		t.Errorf("the read after the write made %d batchGet requests upstream, want 1 (the write invalidates)", n)
	}
	eggs := r.client.Collection("products").Where("category", "==", "eggs")
	res, err := eggs.NewAggregationQuery().WithCount("n").Get(ctx)
	if err != nil {
		t.Fatal(err)
	}
	before := res["n"].(*firestorepb.Value).GetIntegerValue()
	if _, err := r.client.Doc("products/prod-011").Update(ctx, []firestore.Update{{Path: "category", Value: "eggs"}}); err != nil {
		t.Fatal(err)
	}
	res, err = eggs.NewAggregationQuery().WithCount("n").Get(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if after := res["n"].(*firestorepb.Value).GetIntegerValue(); after != before+1 {
		t.Errorf("count of eggs after moving products/prod-011 into eggs through the proxy: %d, want %d", after, before+1)
	}
}
