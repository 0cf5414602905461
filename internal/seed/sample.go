package seed

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"time"
)

// The sample's shape, exported so tests and docs can rely on it.
const (
	SampleFarmers          = 8
	SampleProducts         = 300
	SampleUsers            = 40
	SampleSessions         = 5
	SampleMinOrdersPerUser = 2
	SampleMaxOrdersPerUser = 6
)

// SampleCategories are the product categories of the sample, every one used.
var SampleCategories = []string{"fruit", "vegetables", "dairy", "eggs", "bakery", "honey", "herbs", "grains"}

// SampleOrderStatuses are the order statuses of the sample, every one used.
var SampleOrderStatuses = []string{"placed", "shipped", "delivered"}

// sampleEpoch anchors every timestamp of the sample, so it never depends on the clock.
var sampleEpoch = time.Date(2026, time.March, 1, 8, 0, 0, 0, time.UTC)

var (
	farmerNames = []string{"Green Acres", "Sunny Slope Farm", "Old Mill Orchard", "River Bend Dairy",
		"Hillside Hives", "Meadowlark Gardens", "Stonewall Grains", "Wildflower Homestead"}
	regions     = []string{"north", "south", "east", "west"}
	productBase = map[string][]string{
		"fruit":      {"Apples", "Pears", "Plums", "Cherries", "Strawberries", "Peaches"},
		"vegetables": {"Carrots", "Leeks", "Kale", "Potatoes", "Tomatoes", "Beetroot"},
		"dairy":      {"Whole Milk", "Butter", "Yoghurt", "Cheddar", "Cream"},
		"eggs":       {"Free-range Eggs", "Duck Eggs", "Quail Eggs"},
		"bakery":     {"Sourdough", "Rye Bread", "Scones", "Oat Biscuits"},
		"honey":      {"Wildflower Honey", "Clover Honey", "Honeycomb"},
		"herbs":      {"Basil", "Mint", "Thyme", "Rosemary", "Parsley"},
		"grains":     {"Spelt Flour", "Rolled Oats", "Pearl Barley", "Buckwheat"},
	}
	adjectives = []string{"Heritage", "Fresh", "Small-batch", "Seasonal", "Hand-picked", "Classic"}
	tagPool    = []string{"local", "seasonal", "bestseller", "new", "gluten-free", "vegan", "family-farm", "bulk"}
	firstNames = []string{"Ada", "Ben", "Chloe", "Dev", "Elif", "Femi", "Gus", "Hana", "Ivo", "Jun"}
	lastNames  = []string{"Moreau", "Okafor", "Lindqvist", "Tanaka"}
	cities     = []string{"Lyon", "Porto", "Leeds", "Ghent", "Bologna"}
)

// Sample returns the Harvest Hub sample: farmers/{farmerId}, the products both under
// farmers/{farmerId}/products/{productId} and in the denormalized products/{productId}
// catalogue, users/{userId}, users/{userId}/orders/{orderId} and sessions/{sessionId}.
// It is generated from a fixed seed: every call returns the same documents.
func Sample() Docs {
	rng := rand.New(rand.NewPCG(2026, 3))
	docs := Docs{}

	farmerIDs := make([]string, SampleFarmers)
	for i := range farmerIDs {
		id := fmt.Sprintf("farmer-%02d", i+1)
		farmerIDs[i] = id
		docs["farmers/"+id] = map[string]any{
			"name":   farmerNames[i%len(farmerNames)],
			"region": regions[i%len(regions)],
			"rating": float64(35+rng.IntN(16)) / 10, // 3.5 .. 5.0
		}
	}

	type product struct {
		id, name string
		price    float64
	}
	products := make([]product, SampleProducts)
	for i := range products {
		id := fmt.Sprintf("prod-%03d", i+1)
		farmerID := farmerIDs[i%SampleFarmers]
		category := SampleCategories[i%len(SampleCategories)]
		base := productBase[category]
		name := adjectives[rng.IntN(len(adjectives))] + " " + base[rng.IntN(len(base))]
		price := cents(0.5 + rng.Float64()*19.5)
		tags := []any{}
		for _, tg := range rng.Perm(len(tagPool))[:rng.IntN(4)] {
			tags = append(tags, tagPool[tg])
		}
		fields := map[string]any{
			"name":      name,
			"category":  category,
			"price":     price,
			"stock":     int64(rng.IntN(200)),
			"farmerId":  farmerID,
			"tags":      tags,
			"organic":   rng.IntN(3) != 0,
			"createdAt": sampleEpoch.Add(time.Duration(i) * 37 * time.Minute),
		}
		docs["products/"+id] = fields
		docs["farmers/"+farmerID+"/products/"+id] = clone(fields)
		products[i] = product{id, name, price}
	}

	for u := 1; u <= SampleUsers; u++ {
		userID := fmt.Sprintf("user-%02d", u)
		first, last := firstNames[(u-1)%len(firstNames)], lastNames[(u-1)/len(firstNames)%len(lastNames)]
		docs["users/"+userID] = map[string]any{
			"name":  first + " " + last,
			"email": fmt.Sprintf("%s.%s%d@example.com", strings.ToLower(first), strings.ToLower(last), u),
			"city":  cities[rng.IntN(len(cities))],
		}
		orders := SampleMinOrdersPerUser + rng.IntN(SampleMaxOrdersPerUser-SampleMinOrdersPerUser+1)
		for o := 1; o <= orders; o++ {
			items := []any{}
			total := 0.0
			for range 1 + rng.IntN(4) {
				p := products[rng.IntN(len(products))]
				qty := int64(1 + rng.IntN(5))
				items = append(items, map[string]any{"productId": p.id, "name": p.name, "qty": qty, "price": p.price})
				total += float64(qty) * p.price
			}
			docs[fmt.Sprintf("users/%s/orders/order-%02d-%d", userID, u, o)] = map[string]any{
				"items":     items,
				"total":     cents(total),
				"status":    SampleOrderStatuses[(u+o)%len(SampleOrderStatuses)],
				"createdAt": sampleEpoch.Add(time.Duration(u*24+o*5) * time.Hour),
			}
		}
	}

	for s := 1; s <= SampleSessions; s++ {
		docs[fmt.Sprintf("sessions/sess-%02d", s)] = map[string]any{
			"user":      Ref(fmt.Sprintf("users/user-%02d", s)),
			"userAgent": "Mozilla/5.0 (sample)",
			"expiresAt": sampleEpoch.Add(time.Duration(s) * 24 * time.Hour),
		}
	}
	return docs
}

func cents(x float64) float64 { return math.Round(x*100) / 100 }

// clone copies a product's fields one level deep: the tags slice is the only shared
// mutable value.
func clone(fields map[string]any) map[string]any {
	out := make(map[string]any, len(fields))
	for k, v := range fields {
		if s, ok := v.([]any); ok {
			v = append(s[:0:0], s...)
		}
		out[k] = v
	}
	return out
}
