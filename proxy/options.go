package proxy

import (
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/harvest-hub/edge/emitter"
	"github.com/harvest-hub/edge/rules"
)

// Options wire a Proxy. Flags, environment and rules.yaml are resolved by the caller
// (cmd/harvest-proxy); every field here is final.
type Options struct {
	// Listen is the client-facing address, e.g. 127.0.0.1:8080.
	Listen string
	// AdminListen serves /metrics, /healthz, /readyz and /_proxy/... ("" turns it off).
	AdminListen string
	// Upstream is the Firestore REST base URL.
	Upstream string
	// RedisURL of the shared tier and invalidation bus; "" runs L1 only (one replica).
	RedisURL string
	// AMQPURL of RabbitMQ for events; "" keeps events in the outbox. Informational
	// here: the caller builds Emitter from it.
	AMQPURL string
	// OutboxDir holds events the broker has not confirmed (informational, as AMQPURL).
	OutboxDir string
	// Emitter turns successful writes to paths whose rule has events into CloudEvents
	// (see proxy/events.go). nil: no events. The caller owns it: it builds it before
	// New and closes it after Run returns, so no write is answered after it closed.
	Emitter *emitter.Emitter
	// Capture tunes change capture (capture.go).
	Capture CaptureOptions
	// ListenChannel tunes the WebChannel Listen channel's server (listenchannel.go).
	ListenChannel ListenChannelOptions
	// AdminToken guards admin writes (purge); "" refuses them.
	AdminToken string
	// Rules is the live rules.yaml.
	Rules *rules.Store
	// Log receives structured logs; Registry the metrics.
	Log      *slog.Logger
	Registry *prometheus.Registry
}
