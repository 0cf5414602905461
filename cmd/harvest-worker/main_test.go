package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/redis/go-redis/v9"

	"github.com/harvest-hub/edge/internal/testbed"
	"github.com/harvest-hub/edge/worker"
)

func noEnv(string) (string, bool) { return "", false }

func TestMissingConfigIsAClearStartupError(t *testing.T) {
	var stderr bytes.Buffer
	code := run(context.Background(), []string{"-config", filepath.Join(t.TempDir(), "nope.yaml")}, noEnv, io.Discard, &stderr)
	if code != 2 || !strings.Contains(stderr.String(), "nope.yaml") || !strings.Contains(stderr.String(), "-config") {
		t.Errorf("exit %d, stderr %q: want 2 and a message naming the file and how to set it", code, stderr.String())
	}
}

func TestHelpExplainsWhereHandlersAreConfigured(t *testing.T) {
	var stderr bytes.Buffer
	if code := run(context.Background(), []string{"-h"}, noEnv, io.Discard, &stderr); code != 0 {
		t.Errorf("-h exited %d", code)
	}
	for _, want := range []string{"worker.handlers", "rules.yaml", "RABBITMQ_URL", "HARVEST_WORKER_ADMIN_LISTEN", "-admin-listen"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("-h does not mention %s", want)
		}
	}
}

// The worker starts while the broker is unreachable (healthz 503, no crash), connects
// once it is back (healthz 200), counts an event into /stats, serves /metrics, and
// exits 0 on cancellation.
func TestWorkerStartsBeforeTheBrokerAndServesAdmin(t *testing.T) {
	var b [5]byte
	_, _ = rand.Read(b[:])
	id := hex.EncodeToString(b[:])
	exchange, prefix, name := "test.cmd."+id, "test:cmd:"+id+":", "t"+id+"-stats"
	relay := testbed.NewRelay(t, "127.0.0.1:5672")
	relay.Cut()

	conn, err := amqp.Dial("amqp://guest:guest@127.0.0.1:5672/")
	if err != nil {
		t.Fatalf("RabbitMQ must be running at 127.0.0.1:5672: %v", err)
	}
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379"})
	t.Cleanup(func() {
		if ch, err := conn.Channel(); err == nil {
			for _, q := range []string{worker.WorkQueue(name), worker.DeadLetterQueue(name), worker.RetryQueue(name, time.Second),
				worker.RetryQueue(name, 2*time.Second), worker.RetryQueue(name, 4*time.Second), worker.RetryQueue(name, 8*time.Second)} {
				_, _ = ch.QueueDelete(q, false, false, false)
			}
			_ = ch.ExchangeDelete(exchange, false, false)
		}
		conn.Close()
		ctx := context.Background()
		if keys, _ := rdb.Keys(ctx, prefix+"*").Result(); len(keys) > 0 {
			rdb.Del(ctx, keys...)
		}
		rdb.Close()
	})

	cfgPath := filepath.Join(t.TempDir(), "rules.yaml")
	yaml := fmt.Sprintf(`events:
  amqp_url: amqp://guest:guest@%s/
  exchange: %s
cache:
  redis_url: redis://127.0.0.1:6379/0
  key_prefix: "%s"
worker:
  handlers:
    - name: %s
      on: ["orders.*"]
      action: analytics
`, relay.Addr(), exchange, prefix, name)
	if err := os.WriteFile(cfgPath, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	admin := freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	var stderr testbed.Output
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"-config", cfgPath, "-admin-listen", admin}, noEnv, io.Discard, &stderr)
	}()
	defer func() {
		cancel()
		if code := <-done; code != 0 {
			t.Errorf("exit code %d after cancel; stderr:\n%s", code, stderr.String())
		}
	}()

	waitFor(t, "admin listener answering 503 while the broker is unreachable", func() bool {
		code, _ := get(admin + "/healthz")
		return code == http.StatusServiceUnavailable
	})
	relay.Restore()
	waitFor(t, "healthz 200 once the broker is reachable", func() bool {
		code, _ := get(admin + "/healthz")
		return code == http.StatusOK
	})

	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	body := fmt.Sprintf(`{"specversion":"1.0","id":"e-%s","source":"//firestore.googleapis.com/projects/p/databases/(default)",
		"type":"google.cloud.firestore.document.v1.created","subject":"documents/orders/o1","time":%q,"collection":"orders","authhash":"u1"}`,
		id, now.Format(time.RFC3339Nano))
	if err := ch.Publish(exchange, "orders.created", false, false, amqp.Publishing{Body: []byte(body)}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "/stats to count the event", func() bool {
		code, out := get(admin + "/stats?day=" + now.Format("2006-01-02"))
		var st struct {
			Collections map[string]struct {
				Events        map[string]int `json:"events"`
				DistinctUsers int            `json:"distinct_users"`
			} `json:"collections"`
		}
		_ = json.Unmarshal([]byte(out), &st)
		return code == 200 && st.Collections["orders"].Events["created"] == 1 && st.Collections["orders"].DistinctUsers == 1
	})
	_, metrics := get(admin + "/metrics")
	for _, want := range []string{
		`harvest_worker_connected 1`,
		`harvest_worker_deliveries_total{handler="` + name + `",outcome="ok"} 1`,
		`harvest_worker_handle_duration_seconds_count{handler="` + name + `"} 1`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func get(addr string) (int, string) {
	resp, err := http.Get("http://" + addr)
	if err != nil {
		return 0, ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for: %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestWeakWebhookSecrets(t *testing.T) {
	for secret, weak := range map[string]bool{
		"dev-secret-change-me":             true,
		"short":                            true,
		"":                                 true,
		"k3J9x0Qm2Zr8Lw4Vb7Nc1Pt6Ys5Ha0Ue": false,
	} {
		if got := weakSecret(secret); got != weak {
			t.Errorf("weakSecret(%q) = %v, want %v", secret, got, weak)
		}
	}
}
