package seed_test

import (
	"context"
	"os"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/firestore"
	"google.golang.org/api/option"

	"github.com/harvest-hub/edge/internal/seed"
	"github.com/harvest-hub/edge/internal/testbed"
)

func TestMain(m *testing.M) { os.Exit(testbed.Main(m)) }

// restClient is the official Go client in REST mode against a fresh emulator project.
func restClient(t *testing.T) (*firestore.Client, string) {
	t.Helper()
	emu := testbed.Emulator(t)
	project := emu.NewProject(t)
	client, err := firestore.NewRESTClient(context.Background(), project,
		option.WithEndpoint(emu.URL), option.WithoutAuthentication())
	if err != nil {
		t.Fatalf("REST client: %v", err)
	}
	t.Cleanup(func() { client.Close() })
	return client, project
}

func ids(snaps []*firestore.DocumentSnapshot) []string {
	out := make([]string, len(snaps))
	for i, s := range snaps {
		out[i] = s.Ref.Path[strings.Index(s.Ref.Path, "/documents/")+len("/documents/"):]
	}
	sort.Strings(out)
	return out
}

// matching returns the sorted paths of sample documents whose field equals want, in the
// top-level collection collectionID or, with group, in every collection of that id.
func matching(docs seed.Docs, collectionID string, group bool, field string, want any) []string {
	var out []string
	for p, f := range docs {
		segs := strings.Split(p, "/")
		if segs[len(segs)-2] == collectionID && (group || len(segs) == 2) && f[field] == want {
			out = append(out, p)
		}
	}
	sort.Strings(out)
	return out
}

func TestSampleIsDeterministicAndShaped(t *testing.T) {
	a, b := seed.Sample(), seed.Sample()
	if !reflect.DeepEqual(a, b) {
		t.Fatal("two Sample calls differ")
	}
	count := func(pred func(segs []string) bool) int {
		n := 0
		for p := range a {
			if pred(strings.Split(p, "/")) {
				n++
			}
		}
		return n
	}
	top := func(c string) func([]string) bool { return func(s []string) bool { return len(s) == 2 && s[0] == c } }
	sub := func(c string) func([]string) bool { return func(s []string) bool { return len(s) == 4 && s[2] == c } }
	if n := count(top("farmers")); n != seed.SampleFarmers {
		t.Errorf("farmers: %d, want %d", n, seed.SampleFarmers)
	}
	if n := count(top("products")); n != seed.SampleProducts {
		t.Errorf("catalogue products: %d, want %d", n, seed.SampleProducts)
	}
	if n := count(sub("products")); n != seed.SampleProducts {
		t.Errorf("farmer products: %d, want %d", n, seed.SampleProducts)
	}
	if n := count(top("users")); n != seed.SampleUsers {
		t.Errorf("users: %d, want %d", n, seed.SampleUsers)
	}
	if n := count(sub("orders")); n < seed.SampleUsers*seed.SampleMinOrdersPerUser || n > seed.SampleUsers*seed.SampleMaxOrdersPerUser {
		t.Errorf("orders: %d, out of range", n)
	}
	if n := count(top("sessions")); n != seed.SampleSessions {
		t.Errorf("sessions: %d, want %d", n, seed.SampleSessions)
	}
	for _, c := range seed.SampleCategories {
		if len(matching(a, "products", false, "category", c)) == 0 {
			t.Errorf("no product in category %s", c)
		}
	}
	for _, s := range seed.SampleOrderStatuses {
		if len(matching(a, "orders", true, "status", s)) == 0 {
			t.Errorf("no order with status %s", s)
		}
	}
	for p, f := range a {
		if strings.HasPrefix(p, "products/") {
			farmerCopy := a["farmers/"+f["farmerId"].(string)+"/"+p]
			if !reflect.DeepEqual(farmerCopy, f) {
				t.Fatalf("%s differs from its farmer's copy: %v vs %v", p, f, farmerCopy)
			}
		}
	}
}

func TestLoadSampleThenQueryWithGoClient(t *testing.T) {
	client, _ := restClient(t)
	ctx := context.Background()
	docs := seed.Sample()
	n, err := seed.Load(ctx, client, docs)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if n != len(docs) {
		t.Fatalf("Load wrote %d documents, want %d", n, len(docs))
	}

	fruit, err := client.Collection("products").Where("category", "==", "fruit").Documents(ctx).GetAll()
	if err != nil {
		t.Fatal(err)
	}
	if got, want := ids(fruit), matching(docs, "products", false, "category", "fruit"); !slices.Equal(got, want) {
		t.Errorf("where category == fruit: %d documents %v, want %d %v", len(got), got, len(want), want)
	}

	shipped, err := client.CollectionGroup("orders").Where("status", "==", "shipped").Documents(ctx).GetAll()
	if err != nil {
		t.Fatal(err)
	}
	if got, want := ids(shipped), matching(docs, "orders", true, "status", "shipped"); !slices.Equal(got, want) {
		t.Errorf("collection group orders where shipped: %d documents, want %d", len(got), len(want))
	}

	// The group query sees both copies of each product: the catalogue's and the farmer's.
	honey := client.CollectionGroup("products").Where("category", "==", "honey")
	agg, err := honey.NewAggregationQuery().WithCount("n").Get(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := agg.Data()["n"], int64(len(matching(docs, "products", true, "category", "honey"))); got != want {
		t.Errorf("count of honey products across groups: %d, want %d", got, want)
	}

	top, err := client.Collection("products").OrderBy("price", firestore.Desc).Limit(3).Documents(ctx).GetAll()
	if err != nil {
		t.Fatal(err)
	}
	var prices []float64
	for p, f := range docs {
		if strings.HasPrefix(p, "products/") {
			prices = append(prices, f["price"].(float64))
		}
	}
	slices.Sort(prices)
	for i, s := range top {
		if got, want := s.Data()["price"], prices[len(prices)-1-i]; got != want {
			t.Errorf("orderBy price desc #%d: %v, want %v", i, got, want)
		}
	}

	// Types survive the round trip.
	s, err := client.Doc("products/prod-001").Get(ctx)
	if err != nil {
		t.Fatal(err)
	}
	d := s.Data()
	if _, ok := d["price"].(float64); !ok {
		t.Errorf("price is %T, want float64 (double)", d["price"])
	}
	if _, ok := d["stock"].(int64); !ok {
		t.Errorf("stock is %T, want int64 (integer)", d["stock"])
	}
	if _, ok := d["createdAt"].(time.Time); !ok {
		t.Errorf("createdAt is %T, want time.Time (timestamp)", d["createdAt"])
	}
	sess, err := client.Doc("sessions/sess-01").Get(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ref, ok := sess.Data()["user"].(*firestore.DocumentRef); !ok || ref.ID != "user-01" || ref.Parent.ID != "users" {
		t.Errorf("sessions/sess-01 user = %#v, want a reference to users/user-01", sess.Data()["user"])
	}
}
