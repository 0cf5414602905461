// Command harvest-worker consumes the CloudEvents harvest-proxy publishes for
// successful Firestore writes and runs the handlers configured under worker.handlers
// in rules.yaml: signed webhooks, analytics counters, cache invalidation, logging.
// Retries, dead letters and deduplication are package worker's; this file only wires.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"

	"github.com/harvest-hub/edge/internal/buildinfo"
	"github.com/harvest-hub/edge/internal/healthcheck"
	"github.com/harvest-hub/edge/internal/settings"
	"github.com/harvest-hub/edge/proxy/cache"
	"github.com/harvest-hub/edge/rules"
	"github.com/harvest-hub/edge/worker"
	"github.com/harvest-hub/edge/worker/handlers"
)

const usage = `harvest-worker: runs actions on the Firestore write events harvest-proxy publishes.

harvest-proxy turns every successful write into a CloudEvent on a RabbitMQ topic
exchange (events.exchange, default firestore.events; routing key
<collection>.<created|updated|deleted|written>). harvest-worker gives each handler
listed under worker.handlers in rules.yaml its own durable queue (harvest.<name>) and
runs its action on every matching event:

  worker:
    handlers:
      - name: notify-farmer          # queues harvest.notify-farmer[.retry.*|.dlq]
        on: ["orders.created"]       # AMQP topic patterns: orders.*, #, ...
        action: webhook              # webhook | analytics | invalidate | log
        url: https://shop.example/api/firestore-events
        secret: ${WEBHOOK_SECRET}    # HMAC key; see worker/WEBHOOKS.md to verify
        max_attempts: 5              # then the message goes to harvest.<name>.dlq

Failures are retried with doubling backoff through delay queues, then dead-lettered;
each event's side effect happens once per event id (Redis). SIGTERM finishes the
events in flight, then exits. "harvest-worker healthcheck URL" exits 0 when URL
answers 2xx (for container health checks).

Flags (each also read from the environment variable shown; a flag wins over the
variable, the variable over rules.yaml, rules.yaml over the default):
`

// workerSettings are the resolved flags.
type workerSettings struct {
	configPath, amqpURL, redisURL, adminListen string
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	// After the first signal, restore the default: a second one kills at once instead
	// of waiting for in-flight handlers.
	go func() { <-ctx.Done(); stop() }()
	os.Exit(run(ctx, os.Args[1:], os.LookupEnv, os.Stdout, os.Stderr))
}

// run is main without the process: it returns the exit code (0 ok, 1 runtime failure,
// 2 bad flags or configuration).
func run(ctx context.Context, args []string, env func(string) (string, bool), stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "healthcheck" {
		return healthcheck.Run(args[1:], stderr)
	}
	fs := flag.NewFlagSet("harvest-worker", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configFlag := fs.String("config", "", "rules.yaml to read handlers from (env HARVEST_CONFIG; default rules.yaml)")
	amqpFlag := fs.String("amqp", "", "RabbitMQ URL, amqp://user:pass@host:5672/ (env RABBITMQ_URL; default events.amqp_url)")
	redisFlag := fs.String("redis", "", "Redis URL for deduplication and analytics, redis://host:6379/0 (env REDIS_URL; default cache.redis_url)")
	adminFlag := fs.String("admin-listen", "", "address of /metrics, /healthz and /stats (env HARVEST_WORKER_ADMIN_LISTEN; default 127.0.0.1:9091)")
	showVersion := fs.Bool("version", false, "print the version and exit")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *showVersion {
		fmt.Fprintln(stdout, buildinfo.String("harvest-worker"))
		return 0
	}
	log := slog.New(slog.NewJSONHandler(stderr, nil))

	pick := settings.New(fs, env)
	s := workerSettings{configPath: pick.Pick("config", *configFlag, "HARVEST_CONFIG", "rules.yaml")}
	cfg, err := loadConfig(s.configPath)
	if err != nil {
		fmt.Fprintf(stderr, "harvest-worker: cannot use config %s (set -config or HARVEST_CONFIG):\n%v\n", s.configPath, err)
		return 2
	}
	s.amqpURL = pick.Pick("amqp", *amqpFlag, "RABBITMQ_URL", cfg.Events.AMQPURL)
	s.redisURL = pick.Pick("redis", *redisFlag, "REDIS_URL", cfg.Cache.RedisURL)
	s.adminListen = pick.Pick("admin-listen", *adminFlag, "HARVEST_WORKER_ADMIN_LISTEN", "127.0.0.1:9091")

	if err := serve(ctx, s, cfg, log); err != nil {
		fmt.Fprintf(stderr, "harvest-worker: %v\n", err)
		var ce configError
		if errors.As(err, &ce) {
			return 2
		}
		return 1
	}
	return 0
}

// loadConfig is the one place the rules file is read.
func loadConfig(path string) (*rules.Config, error) { return rules.Load(path) }

// configError is a problem the user must fix before the worker can start (exit 2).
type configError struct{ error }

// serve wires everything and runs until ctx is cancelled.
func serve(ctx context.Context, s workerSettings, cfg *rules.Config, log *slog.Logger) error {
	if len(cfg.Worker.Handlers) == 0 {
		return configError{fmt.Errorf("%s has no handlers under worker.handlers: nothing to do", s.configPath)}
	}
	if s.amqpURL == "" {
		return configError{errors.New("no broker: set -amqp, RABBITMQ_URL or events.amqp_url in rules.yaml")}
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	var rdb *redis.Client
	if s.redisURL != "" {
		opt, err := redis.ParseURL(s.redisURL)
		if err != nil {
			return configError{fmt.Errorf("redis url %q: %w", settings.RedactURL(s.redisURL), err)}
		}
		rdb = redis.NewClient(opt)
		defer rdb.Close()
		pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		if err := rdb.Ping(pctx).Err(); err != nil {
			// Not fatal: events wait on the retry path until Redis answers.
			log.Warn("redis not reachable yet; events are delayed until it is", "redis", settings.RedactURL(s.redisURL), "err", err)
		}
		cancel()
	} else {
		log.Warn("no Redis configured (-redis, REDIS_URL, cache.redis_url): no deduplication; a redelivered event runs its handler again")
	}

	deps := handlers.Deps{Redis: redisOrNil(rdb), KeyPrefix: cfg.Cache.KeyPrefix, Logger: log}
	var routes []worker.Route
	for _, hc := range cfg.Worker.Handlers {
		if hc.Action == "invalidate" && deps.Invalidator == nil && rdb != nil {
			inv, closeInv, err := cacheInvalidator(cfg.Cache, rdb, log)
			if err != nil {
				return fmt.Errorf("handler %s: %w", hc.Name, err)
			}
			defer closeInv()
			deps.Invalidator = inv
		}
		h, err := handlers.New(hc, deps)
		if err != nil {
			return configError{fmt.Errorf("%s:%d: %w", s.configPath, hc.Line, err)}
		}
		if hc.Action == "webhook" && weakSecret(hc.Secret) {
			log.Warn("webhook secret is the sample's or short: anyone who knows it can forge events; set WEBHOOK_SECRET to 32+ random characters",
				"handler", hc.Name, "config", fmt.Sprintf("%s:%d", s.configPath, hc.Line))
		}
		routes = append(routes, worker.Route{Config: hc, Handler: h})
	}

	opts := worker.Options{
		AMQPURL: s.amqpURL, Exchange: cfg.Events.Exchange, Routes: routes,
		Logger: log, Registerer: reg,
	}
	if rdb != nil {
		opts.Claims = worker.NewClaims(rdb, cfg.Cache.KeyPrefix)
	}
	consumer, err := worker.New(opts)
	if err != nil {
		return configError{err}
	}

	ln, err := net.Listen("tcp", s.adminListen)
	if err != nil {
		return fmt.Errorf("admin listener %s: %w", s.adminListen, err)
	}
	admin := &http.Server{Handler: adminMux(reg, consumer, rdb, cfg.Cache.KeyPrefix), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := admin.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("admin listener failed", "err", err)
		}
	}()
	log.Info("harvest-worker starting", "version", buildinfo.Short(), "config", s.configPath, "amqp", settings.RedactURL(s.amqpURL),
		"exchange", opts.Exchange, "handlers", len(routes), "admin", ln.Addr().String())

	err = consumer.Run(ctx) // returns after SIGTERM once in-flight events are finished
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = admin.Shutdown(sctx)
	log.Info("harvest-worker stopped")
	return err
}

func redisOrNil(c *redis.Client) redis.UniversalClient {
	if c == nil {
		return nil // a typed nil inside the interface would pass handlers' nil checks
	}
	return c
}

// cacheInvalidator builds the proxy cache's generations on the worker's Redis, so an
// invalidate handler bumps exactly what harvest-proxy replicas check. L1 is off: the
// worker serves no reads.
func cacheInvalidator(c rules.Cache, rdb *redis.Client, log *slog.Logger) (handlers.Invalidator, func(), error) {
	c.L1MaxBytes = 0
	tiers, err := cache.New(cache.Config{Cache: c, Redis: rdb, Logger: log})
	if err != nil {
		return nil, nil, fmt.Errorf("cache generations for invalidate: %w", err)
	}
	return invalidatorFunc(tiers.PurgeDocument), func() { tiers.Close() }, nil
}

type invalidatorFunc func(ctx context.Context, database, documentName string) error

func (f invalidatorFunc) Invalidate(ctx context.Context, database, documentName string) error {
	return f(ctx, database, documentName)
}

// adminMux serves /metrics, /healthz (200 while consuming, else 503) and /stats.
func adminMux(reg *prometheus.Registry, consumer *worker.Consumer, rdb *redis.Client, prefix string) *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		if !consumer.Connected() {
			http.Error(w, "not connected to the broker", http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "ok\n")
	})
	if rdb != nil {
		mux.Handle("GET /stats", handlers.NewAnalytics(rdb, prefix, 0).StatsHandler())
	} else {
		mux.HandleFunc("GET /stats", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusServiceUnavailable)
			_ = json.NewEncoder(w).Encode(map[string]string{"error": "no Redis configured: analytics are off"})
		})
	}
	return mux
}

// weakSecret reports a webhook secret that signs nothing worth trusting: the sample
// rules.yaml's development default, or one short enough to guess.
func weakSecret(secret string) bool {
	return len(secret) < 16 || strings.Contains(secret, "change-me")
}
