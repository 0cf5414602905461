// Command harvest-proxy is the Harvest Hub edge: a caching proxy for the Cloud Firestore
// REST API. See `harvest-proxy -h`.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/harvest-hub/edge/emitter"
	"github.com/harvest-hub/edge/internal/buildinfo"
	"github.com/harvest-hub/edge/internal/healthcheck"
	"github.com/harvest-hub/edge/internal/settings"
	"github.com/harvest-hub/edge/proxy"
	"github.com/harvest-hub/edge/rules"
)

const usage = `harvest-proxy: a caching proxy for the Cloud Firestore REST API.

Point your app's Firestore base URL at this proxy and change nothing else. Reads are
cached in memory (L1) and in Redis (L2) under the rules in rules.yaml; every write through
any replica invalidates exactly the cached reads it affects, and becomes a CloudEvent on
RabbitMQ for harvest-worker.

Usage:
  harvest-proxy [flags]                       run the proxy
  harvest-proxy rules check [FILE]            validate a rules file (default rules.yaml)
  harvest-proxy rules explain [FILE] PATH     which rule applies to a document or collection path
  harvest-proxy healthcheck URL               exit 0 when URL answers 2xx (for container health checks)

Flags (each also read from its environment variable; a flag beats the variable, which
beats rules.yaml, which beats the default):
`

const usageTail = `
Signals: SIGHUP reloads rules.yaml (a bad file is refused and the old rules stay);
SIGTERM or SIGINT drains in-flight requests and exits.

Examples:
  FIRESTORE_EMULATOR_HOST=127.0.0.1:8081 harvest-proxy
  harvest-proxy -upstream https://firestore.googleapis.com -redis redis://127.0.0.1:6379/0
  harvest-proxy rules explain rules.yaml /farmers/f1/products/p1
`

// stepHook, when set (only by this package's crash-injection test, in a child
// process), is called at each step of every write's event path (emitter.Step*).
var stepHook func(step string)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "rules" {
		return rulesCommand(args[1:], stdout, stderr)
	}
	if len(args) > 0 && args[0] == "healthcheck" {
		return healthcheck.Run(args[1:], stderr)
	}
	fs := flag.NewFlagSet("harvest-proxy", flag.ContinueOnError)
	fs.SetOutput(stderr)
	config := fs.String("config", "rules.yaml", "rules file `path` [HARVEST_CONFIG]")
	listen := fs.String("listen", "127.0.0.1:8080", "client-facing `address`: REST and WebChannel (HTTP/1.1) and gRPC (HTTP/2 cleartext) on one port [HARVEST_LISTEN]")
	adminListen := fs.String("admin-listen", "127.0.0.1:9090", "admin `address`: /metrics, /healthz, /readyz, /_proxy/... [HARVEST_ADMIN_LISTEN]")
	upstreamURL := fs.String("upstream", "", "Firestore REST base `URL` [FIRESTORE_UPSTREAM] (default http://$FIRESTORE_EMULATOR_HOST when set, else https://firestore.googleapis.com)")
	redisURL := fs.String("redis", "", "Redis `URL` for the shared tier and cross-replica invalidation [REDIS_URL] (default: none, L1 only)")
	amqpURL := fs.String("amqp", "", "RabbitMQ `URL` for events [RABBITMQ_URL] (default: none, events stay in the outbox)")
	outbox := fs.String("outbox", "", "`directory` of the disk outbox for unconfirmed events [HARVEST_OUTBOX_DIR] (default ./data/outbox)")
	adminToken := fs.String("admin-token", "", "bearer `token` for admin writes such as purge [HARVEST_ADMIN_TOKEN] (default: none, admin writes refused)")
	upstreamToken := fs.String("upstream-token-file", "", "`file` holding the bearer token of the proxy's own upstream Listen (change capture) [HARVEST_UPSTREAM_TOKEN_FILE] (default: \"owner\" on an http emulator, Application Default Credentials on https)")
	logLevel := fs.String("log-level", "info", "log `level`: debug, info, warn, error [HARVEST_LOG_LEVEL]")
	showVersion := fs.Bool("version", false, "print the version and exit")
	fs.Usage = func() {
		fmt.Fprint(stderr, usage)
		fs.PrintDefaults()
		fmt.Fprint(stderr, usageTail)
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *showVersion {
		fmt.Fprintln(stdout, buildinfo.String("harvest-proxy"))
		return 0
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "harvest-proxy: unexpected argument %q (see harvest-proxy -h)\n", fs.Arg(0))
		return 2
	}

	pick := settings.New(fs, nil)
	log, err := newLogger(stderr, pick.Pick("log-level", *logLevel, "HARVEST_LOG_LEVEL", "info"))
	if err != nil {
		fmt.Fprintf(stderr, "harvest-proxy: %v\n", err)
		return 2
	}
	store, err := rules.NewStore(pick.Pick("config", *config, "HARVEST_CONFIG", "rules.yaml"), log)
	if err != nil {
		fmt.Fprintf(stderr, "harvest-proxy: refusing to start: %v\n", err)
		return 1
	}
	cfg := store.Current()
	emulator := ""
	if host := pick.Env("FIRESTORE_EMULATOR_HOST"); host != "" {
		emulator = "http://" + host
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	opts := proxy.Options{
		Listen:      pick.Pick("listen", *listen, "HARVEST_LISTEN", "127.0.0.1:8080"),
		AdminListen: pick.Pick("admin-listen", *adminListen, "HARVEST_ADMIN_LISTEN", "127.0.0.1:9090"),
		Upstream:    pick.Pick("upstream", *upstreamURL, "FIRESTORE_UPSTREAM", cfg.Upstream.URL, emulator, "https://firestore.googleapis.com"),
		RedisURL:    pick.Pick("redis", *redisURL, "REDIS_URL", cfg.Cache.RedisURL),
		AMQPURL:     pick.Pick("amqp", *amqpURL, "RABBITMQ_URL", cfg.Events.AMQPURL),
		OutboxDir:   pick.Pick("outbox", *outbox, "HARVEST_OUTBOX_DIR", cfg.Events.OutboxDir, "./data/outbox"),
		AdminToken:  pick.Pick("admin-token", *adminToken, "HARVEST_ADMIN_TOKEN"),
		Capture:     proxy.CaptureOptions{TokenFile: pick.Pick("upstream-token-file", *upstreamToken, "HARVEST_UPSTREAM_TOKEN_FILE")},
		Rules:       store,
		Log:         log,
		Registry:    reg,
	}
	em, err := newEmitter(cfg.Events, opts.AMQPURL, opts.OutboxDir, log, reg)
	if err != nil {
		fmt.Fprintf(stderr, "harvest-proxy: refusing to start: %v\n", err)
		return 1
	}
	// Closed after Run returned: every write answered has had its Emit return, and
	// whatever the broker has not confirmed stays in the outbox for the next start.
	defer func() {
		if err := em.Close(); err != nil {
			log.Error("closing the event emitter", "err", err)
		}
	}()
	if stepHook != nil {
		em.SetStepHook(stepHook)
	}
	opts.Emitter = em
	p, err := proxy.New(opts)
	if err != nil {
		fmt.Fprintf(stderr, "harvest-proxy: refusing to start: %v\n", err)
		return 1
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	go store.Watch(ctx, 2*time.Second)
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		for range hup {
			if err := store.Reload(); err == nil {
				log.Info("rules reloaded on SIGHUP", "file", store.Path())
			}
		}
	}()

	log.Info("harvest-proxy starting", "version", buildinfo.Short(), "listen", opts.Listen,
		"admin", opts.AdminListen, "upstream", opts.Upstream, "rules", store.Path(),
		"redis", settings.RedactURL(opts.RedisURL), "amqp", settings.RedactURL(opts.AMQPURL), "outbox", opts.OutboxDir)
	if err := p.Run(ctx); err != nil {
		log.Error("harvest-proxy stopped", "err", err)
		return 1
	}
	return 0
}

// newEmitter builds the event emitter from the resolved settings (amqpURL and
// outboxDir beat rules.yaml's events:) and says plainly where events will go.
func newEmitter(cfg rules.Events, amqpURL, outboxDir string, log *slog.Logger, reg prometheus.Registerer) (*emitter.Emitter, error) {
	cfg.AMQPURL, cfg.OutboxDir = amqpURL, outboxDir
	em, err := emitter.New(cfg, log, reg)
	if err != nil {
		return nil, fmt.Errorf("events: %w", err)
	}
	if amqpURL == "" {
		log.Warn("events stay in the outbox: no RabbitMQ URL (-amqp / RABBITMQ_URL); a later start with one publishes them",
			"outbox", outboxDir, "outbox_max_bytes", cfg.OutboxMaxBytes)
	} else {
		log.Info("events go to RabbitMQ, through the outbox while it is unreachable",
			"amqp", settings.RedactURL(amqpURL), "exchange", cfg.Exchange, "outbox", outboxDir,
			"outbox_max_bytes", cfg.OutboxMaxBytes)
	}
	return em, nil
}

func rulesCommand(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, "usage: harvest-proxy rules check [FILE] | harvest-proxy rules explain [FILE] PATH")
		return 2
	}
	switch args[0] {
	case "check":
		return rules.RunCheck(args[1:], stdout, stderr)
	case "explain":
		return rules.RunExplain(args[1:], stdout, stderr)
	}
	fmt.Fprintf(stderr, "harvest-proxy rules: unknown subcommand %q (want check or explain)\n", args[0])
	return 2
}

func newLogger(w io.Writer, level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log level %q: want debug, info, warn or error", level)
	}
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: l})), nil
}
