package proxy

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/harvest-hub/edge/fanout"
	"github.com/harvest-hub/edge/proxy/cache"
)

// adminHandler serves the admin listener:
//
//	GET  /metrics       Prometheus metrics
//	GET  /healthz       200 while the process serves
//	GET  /readyz        200 when it should get traffic (503 while draining)
//	GET  /_proxy/stats  a JSON summary: cache results, L1 size, Redis and rules state
//	POST /_proxy/purge  invalidate by document, collection, collection group or database
//	                    (Authorization: Bearer <admin token>)
func (p *Proxy) adminHandler() http.Handler {
	mux := http.NewServeMux()
	if p.opts.Registry != nil {
		mux.Handle("GET /metrics", promhttp.HandlerFor(p.opts.Registry, promhttp.HandlerOpts{}))
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if p.draining.Load() {
			http.Error(w, "draining", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	mux.HandleFunc("GET /_proxy/stats", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, p.Stats())
	})
	mux.HandleFunc("POST /_proxy/purge", p.purge)
	return mux
}

// Stats is the JSON of GET /_proxy/stats.
type Stats struct {
	Requests    map[string]int64 `json:"requests"` // by X-Cache result
	ReadsSaved  int64            `json:"billed_reads_avoided"`
	L1Entries   int              `json:"l1_entries"`
	L1Bytes     int64            `json:"l1_bytes"`
	L1MaxBytes  int64            `json:"l1_max_bytes"`
	Redis       bool             `json:"redis_configured"`
	Subscribed  bool             `json:"invalidation_trusted"`
	RulesFile   string           `json:"rules_file"`
	RulesLoaded time.Time        `json:"rules_loaded_at"`
	Reloads     uint64           `json:"rules_reloads"`
	ReloadFails uint64           `json:"rules_reload_failures"`
	LastError   string           `json:"rules_last_error,omitempty"`
	Listen      fanout.Stats     `json:"listen"` // the Listen fan-out
}

// Stats summarises the proxy's state.
func (p *Proxy) Stats() Stats {
	rs := p.rules.Stats()
	s := Stats{
		Requests:    p.m.results(),
		ReadsSaved:  p.m.saved.Load(),
		Redis:       p.tiers.L2 != nil,
		Subscribed:  p.tiers.Gens.Trusted(),
		RulesFile:   p.rules.Path(),
		RulesLoaded: rs.LoadedAt,
		Reloads:     rs.Reloads,
		ReloadFails: rs.Failures,
		LastError:   rs.LastError,
		Listen:      p.hub.Stats(),
	}
	if p.tiers.L1 != nil {
		s.L1Entries, s.L1Bytes, s.L1MaxBytes = p.tiers.L1.Len(), p.tiers.L1.Bytes(), p.tiers.L1.MaxBytes()
	}
	return s
}

// PurgeRequest is the body of POST /_proxy/purge. Database is
// "projects/{p}/databases/{d}" (default database of project when only Project is
// given); exactly one of Document, Collection, Group or All.
type PurgeRequest struct {
	Project    string `json:"project"`
	Database   string `json:"database"`
	Document   string `json:"document"`   // "products/p1"
	Collection string `json:"collection"` // "farmers/f1/products"
	Group      string `json:"group"`      // collection id: "products"
	All        bool   `json:"all"`        // everything cached for the database
}

func (p *Proxy) purge(w http.ResponseWriter, r *http.Request) {
	if p.opts.AdminToken == "" {
		adminError(w, http.StatusForbidden, "PERMISSION_DENIED", "admin writes are off: start the proxy with -admin-token")
		return
	}
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || subtle.ConstantTimeCompare([]byte(token), []byte(p.opts.AdminToken)) != 1 {
		adminError(w, http.StatusUnauthorized, "UNAUTHENTICATED", "a valid admin bearer token is required")
		return
	}
	var pr PurgeRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&pr); err != nil {
		// The decoder's message quotes the body: say what is wanted instead.
		adminError(w, http.StatusBadRequest, "INVALID_ARGUMENT", "purge body: not the JSON object the README documents")
		return
	}
	db := pr.Database
	if db == "" && pr.Project != "" {
		db = "projects/" + pr.Project + "/databases/(default)"
	}
	if !strings.HasPrefix(db, "projects/") || !strings.Contains(db, "/databases/") {
		adminError(w, http.StatusBadRequest, "INVALID_ARGUMENT", `give "database": "projects/{p}/databases/{d}" or "project"`)
		return
	}
	n := 0
	for _, set := range []bool{pr.Document != "", pr.Collection != "", pr.Group != "", pr.All} {
		if set {
			n++
		}
	}
	if n != 1 {
		adminError(w, http.StatusBadRequest, "INVALID_ARGUMENT", `give exactly one of "document", "collection", "group" or "all"`)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	var err error
	switch {
	case pr.Document != "":
		err = p.tiers.PurgeDocument(ctx, db, strings.Trim(pr.Document, "/"))
	case pr.Collection != "":
		err = p.tiers.PurgeCollection(ctx, db, strings.Trim(pr.Collection, "/"))
	case pr.Group != "":
		err = p.tiers.PurgeGroup(ctx, db, pr.Group)
	default:
		err = p.tiers.PurgeDatabase(ctx, db)
	}
	if errors.Is(err, cache.ErrNotAResource) {
		adminError(w, http.StatusBadRequest, "INVALID_ARGUMENT", `"document" must name a document and "collection" a collection, relative to the documents root`)
		return
	}
	if err != nil {
		p.log.Warn("purge incomplete", "err", err)
		adminError(w, http.StatusServiceUnavailable, "UNAVAILABLE", "purge incomplete: "+err.Error())
		return
	}
	p.log.Info("purged", "database", db, "document", pr.Document, "collection", pr.Collection, "group", pr.Group, "all", pr.All)
	writeJSON(w, http.StatusOK, map[string]any{"purged": true})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

func adminError(w http.ResponseWriter, code int, status, msg string) {
	writeJSON(w, code, map[string]any{"error": map[string]any{"code": code, "message": msg, "status": status}})
}
