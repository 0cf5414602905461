#!/usr/bin/env bash
# run.sh: what `make run` starts, for a newcomer on one machine.
#   1. Google's Firestore emulator on 127.0.0.1:8081 (or the one FIRESTORE_EMULATOR_HOST names),
#   2. the Harvest Hub sample data in it (harvest-seed),
#   3. harvest-proxy on 127.0.0.1:8080 (admin 127.0.0.1:9090) and harvest-worker,
# using Redis and RabbitMQ when they answer on loopback and saying so when they do not.
# Ctrl-C stops everything this script started.
set -euo pipefail
cd "$(dirname "$0")/.."

# Every setting can be changed from the environment (the tour test runs this script on
# its own ports, directories, Redis key prefix and RabbitMQ vhost).
BIN=${HARVEST_BIN:-./bin}
RUN=${HARVEST_RUN_DIR:-.run}
PROJECT=${HARVEST_PROJECT:-harvest-hub-dev}
EMU_PORT=${HARVEST_EMULATOR_PORT:-8081}
PROXY=${HARVEST_LISTEN:-127.0.0.1:8080}
ADMIN=${HARVEST_ADMIN_LISTEN:-127.0.0.1:9090}
export HARVEST_WORKER_ADMIN_LISTEN=${HARVEST_WORKER_ADMIN_LISTEN:-127.0.0.1:9091}
mkdir -p "$RUN"

say() { printf '\033[1mrun:\033[0m %s\n' "$*"; }
pids=()
cleanup() {
	trap - EXIT INT TERM
	say "stopping"
	for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
	wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

port_open() { (exec 3<>"/dev/tcp/${1%:*}/${1##*:}") 2>/dev/null; }

# 1. The emulator.
if [ -n "${FIRESTORE_EMULATOR_HOST:-}" ]; then
	say "using the Firestore emulator at $FIRESTORE_EMULATOR_HOST (FIRESTORE_EMULATOR_HOST)"
else
	port_open "127.0.0.1:$EMU_PORT" && { echo "run: port $EMU_PORT is taken; set HARVEST_EMULATOR_PORT or FIRESTORE_EMULATOR_HOST" >&2; exit 1; }
	jar=""
	for root in "${CLOUDSDK_ROOT_DIR:-}" "$(gcloud info --format='value(installation.sdk_root)' 2>/dev/null || true)" \
		/usr/lib/google-cloud-sdk /usr/share/google-cloud-sdk /opt/google-cloud-sdk; do
		f="$root/platform/cloud-firestore-emulator/cloud-firestore-emulator.jar"
		[ -n "$root" ] && [ -f "$f" ] && { jar=$f; break; }
	done
	[ -n "$jar" ] || { echo "run: Google's Firestore emulator is not installed (google-cloud-cli-firestore-emulator)" >&2; exit 1; }
	say "starting the Firestore emulator on 127.0.0.1:$EMU_PORT (log: $RUN/emulator.log)"
	java -Duser.language=en -cp "$jar" com.google.cloud.datastore.emulator.firestore.CloudFirestore \
		start --host=127.0.0.1 --port="$EMU_PORT" >"$RUN/emulator.log" 2>&1 &
	pids+=($!)
	for _ in $(seq 1 150); do
		[ "$(curl -s -m 1 "http://127.0.0.1:$EMU_PORT/" 2>/dev/null)" = "Ok" ] && break
		sleep 0.2
	done
	[ "$(curl -s -m 1 "http://127.0.0.1:$EMU_PORT/")" = "Ok" ] || { echo "run: the emulator did not start; see $RUN/emulator.log" >&2; exit 1; }
	export FIRESTORE_EMULATOR_HOST=127.0.0.1:$EMU_PORT
fi

# 2. Sample data.
say "seeding project $PROJECT with the Harvest Hub sample"
"$BIN/harvest-seed" -project "$PROJECT"

# 3. Redis and RabbitMQ, when present.
if [ -n "${REDIS_URL:-}" ]; then
	say "L2 cache and cross-replica invalidation on the Redis named by REDIS_URL"
elif [ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" = "PONG" ]; then
	export REDIS_URL=redis://127.0.0.1:6379/0
	say "Redis answers on 127.0.0.1:6379: L2 cache and cross-replica invalidation on"
else
	say "no Redis on 127.0.0.1:6379: L1 (in-process) cache only"
fi
if [ -n "${RABBITMQ_URL:-}" ]; then
	say "events are published to the RabbitMQ named by RABBITMQ_URL"
elif port_open 127.0.0.1:5672; then
	export RABBITMQ_URL=amqp://guest:guest@127.0.0.1:5672/
	say "RabbitMQ answers on 127.0.0.1:5672: events are published to it"
else
	say "no RabbitMQ on 127.0.0.1:5672: events wait in the disk outbox (${HARVEST_OUTBOX_DIR:-./data/outbox})"
fi

# 4. The proxy and the worker.
"$BIN/harvest-proxy" -listen "$PROXY" -admin-listen "$ADMIN" 2> >(tee "$RUN/proxy.log" >&2) &
pids+=($!)
if [ -x "$BIN/harvest-worker" ]; then
	"$BIN/harvest-worker" 2> >(tee "$RUN/worker.log" >&2) &
	pids+=($!)
fi
for _ in $(seq 1 50); do port_open "$PROXY" && break; sleep 0.1; done
port_open "$PROXY" || { echo "run: harvest-proxy did not start; see $RUN/proxy.log" >&2; exit 1; }

DOC="http://$PROXY/v1/projects/$PROJECT/databases/(default)/documents"
cat <<TOUR

  Harvest Hub edge is up: the proxy on http://$PROXY, admin on http://$ADMIN.
  Point the Firestore SDK at $PROXY (connectFirestoreEmulator(db, "${PROXY%:*}", ${PROXY##*:})).

  A short tour (another terminal):
    curl -si '$DOC/products/prod-001' | grep -i x-cache         # MISS: read from Firestore
    curl -si '$DOC/products/prod-001' | grep -i x-cache         # HIT-L1: served from memory
    curl -s -X PATCH '$DOC/products/prod-001?updateMask.fieldPaths=price' \\
         -d '{"fields":{"price":{"doubleValue":1.99}}}'     # a write through the proxy
    curl -si '$DOC/products/prod-001' | grep -i -e x-cache -e 1.99   # MISS again, with the new price
    curl -s -X PATCH '$DOC/users/user-01/orders/tour-1' \\
         -d '{"fields":{"status":{"stringValue":"placed"}}}'   # an order: its rule emits events
    grep 'firestore event' $RUN/worker.log                  # the worker's log handler got it
    curl -s http://$ADMIN/_proxy/stats                      # hits, misses, reads saved

  Ctrl-C stops everything started here.
TOUR
wait
