#!/usr/bin/env bash
# bench.sh: the benchmarks of `make bench`, printed as ONE table from one run. Every
# figure is measured beside its baseline in the same run, rows interleaved round by
# round; nothing here asserts a time: PASS/FAIL are informational and the script exits
# 0 unless a step itself broke.
#
# HTTP rows: wrk with the same threads, connections and duration for every row (after a
# warm-up), against the same warmed document of a Firestore emulator:
#   nginx proxy_cache (stock-ish: access log on; tuned: access_log off, keep-alive to
#   clients and upstream, open_file_cache, sendfile/tcp_nopush), a bare fasthttp server
#   answering the same bytes from a map (the ceiling), harvest-proxy L1 hit, and
#   harvest-proxy L2 hit (cache: {l1_max_bytes: 0}, Redis on).
# CPU layout on a 2-core machine: every server under test runs on CPU 0 (Go servers get
# GOMAXPROCS=1, nginx as many workers as the CPUs it is given: `auto` on that share), wrk
# runs with one thread on CPU 1. With more cores the server gets all but the last.
# Then: the added latency of a miss, the realistic mix (internal/bench BenchmarkMix), the
# Go micro-benchmarks, the emitter ratio, and the Listen fan-out rows (proxy/conformance
# fanout_bench_test.go: upstream documents for N listeners, write-to-100th-listener
# latency, memory per client and per shared target; each beside its direct baseline).
#
# Knobs: BENCH_DURATION (5s per row and round), BENCH_ROUNDS (3: the median then drops one
# round a stall of the shared host spoiled; of 2 it is their mean), BENCH_CONNECTIONS (64),
# BENCH_MISSES (600 documents read once each way for the miss latency),
# FIRESTORE_EMULATOR_HOST (reuse a running emulator), REDIS_URL (redis://127.0.0.1:6379).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DUR=${BENCH_DURATION:-5s}
ROUNDS=${BENCH_ROUNDS:-3}
CONNS=${BENCH_CONNECTIONS:-64}
MISSES=${BENCH_MISSES:-600}
REDIS=${REDIS_URL:-redis://127.0.0.1:6379}
REDIS_HOSTPORT=${REDIS#redis://}
REDIS_HOSTPORT=${REDIS_HOSTPORT%%/*}
WORK=$(mktemp -d /tmp/harvest-bench.XXXXXX)
RES=$WORK/results.txt
RUN_ID=$(head -c6 /dev/urandom | od -An -tx1 | tr -d ' \n')
PREFIX="bench:$RUN_ID:"
PIDS=()   # the servers under test
EMU_PID=""
BROKEN=()

say() { printf '== %s\n' "$*" >&2; }
broke() { BROKEN+=("$1"); printf 'bench: step failed: %s\n' "$1" >&2; }

cleanup() {
	for pid in "${PIDS[@]}" $EMU_PID; do kill "$pid" 2>/dev/null || true; done
	wait 2>/dev/null || true
	redis-cli -u "$REDIS" --scan --pattern "${PREFIX}*" 2>/dev/null | xargs -r -n 500 redis-cli -u "$REDIS" del >/dev/null 2>&1 || true
	rm -rf "$WORK"
}
trap cleanup EXIT

ncpu=$(nproc)
if [ "$ncpu" -ge 2 ]; then
	SRV_CPUS="0-$((ncpu - 2))"
	SRV_N=$((ncpu - 1))
	SRV="taskset -c $SRV_CPUS"
	LOAD="taskset -c $((ncpu - 1))"
else
	SRV_N=1 SRV="" LOAD=""
fi

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
next_port=$((20000 + RANDOM % 20000))
free_port() { # free_port VAR: sets VAR (no subshell, so ports never repeat)
	while ! port_free $next_port; do next_port=$((next_port + 1)); done
	printf -v "$1" '%s' "$next_port"
	next_port=$((next_port + 1))
}
wait_http() { # wait_http URL: until it answers at all
	for _ in $(seq 1 300); do
		curl -s -o /dev/null "$1" && return 0
		sleep 0.1
	done
	return 1
}

say "building harvest-proxy and harvest-bench"
go build -o "$WORK/bin/" ./cmd/harvest-proxy ./cmd/harvest-bench
HB=$WORK/bin/harvest-bench

# --- upstream: the emulator, one project, the hit document and the miss documents ----
if [ -n "${FIRESTORE_EMULATOR_HOST:-}" ] && curl -s -o /dev/null "http://$FIRESTORE_EMULATOR_HOST/"; then
	EMU=$FIRESTORE_EMULATOR_HOST
else
	say "starting the Firestore emulator"
	"$HB" emulator >"$WORK/emu.out" 2>"$WORK/emu.err" &
	EMU_PID=$!
	for _ in $(seq 1 300); do [ -s "$WORK/emu.out" ] && break; sleep 0.1; done
	EMU=$(head -1 "$WORK/emu.out")
	[ -n "$EMU" ] || { cat "$WORK/emu.err" >&2; echo "bench: the emulator did not start" >&2; exit 1; }
fi
PROJECT="bench-$RUN_ID"
"$HB" seed -emulator "$EMU" -project "$PROJECT" -prefix products/p -n 1
"$HB" seed -emulator "$EMU" -project "$PROJECT" -prefix misses/m -n "$MISSES"
DOCS="/v1/projects/$PROJECT/databases/%28default%29/documents"
URI="$DOCS/products/p0?%24alt=json%3Benum-encoding%3Dint" # as the Go client asks

# --- servers under test ------------------------------------------------------------
nginx_conf() { # nginx_conf NAME PORT tuned|stock
	local dir=$WORK/nginx-$1
	mkdir -p "$dir/logs" "$dir/cache" "$dir/tmp"
	local tuned=$3
	{
		echo "worker_processes $SRV_N; # auto, on the CPUs the server is given"
		[ "$(id -u)" -eq 0 ] && echo "user root;"
		echo "pid $dir/nginx.pid; error_log $dir/logs/error.log warn;"
		echo "events { worker_connections 4096; $([ "$tuned" = tuned ] && echo 'multi_accept on;') }"
		echo "http {"
		echo "  client_body_temp_path $dir/tmp/body; proxy_temp_path $dir/tmp/proxy;"
		echo "  fastcgi_temp_path $dir/tmp/fcgi; uwsgi_temp_path $dir/tmp/uwsgi; scgi_temp_path $dir/tmp/scgi;"
		echo "  proxy_cache_path $dir/cache levels=1:2 keys_zone=fs:10m max_size=100m inactive=60m use_temp_path=off;"
		echo "  upstream emulator { server $EMU; $([ "$tuned" = tuned ] && echo 'keepalive 64;') }"
		if [ "$tuned" = tuned ]; then
			echo "  access_log off; sendfile on; tcp_nopush on; tcp_nodelay on;"
			echo "  keepalive_timeout 120s; keepalive_requests 1000000;"
			echo "  open_file_cache max=10000 inactive=60s; open_file_cache_valid 60s; open_file_cache_errors on;"
		else
			echo "  access_log $dir/logs/access.log;"
		fi
		echo "  server {"
		echo "    listen 127.0.0.1:$2;"
		echo "    location / {"
		echo "      proxy_pass http://emulator;"
		echo "      proxy_cache fs; proxy_cache_key \$request_method\$request_uri; proxy_cache_valid 200 10m;"
		echo "      proxy_cache_lock on; proxy_ignore_headers Cache-Control Expires Set-Cookie;"
		echo "      add_header X-Cache \$upstream_cache_status;"
		[ "$tuned" = tuned ] && echo '      proxy_http_version 1.1; proxy_set_header Connection "";'
		echo "    }"
		echo "  }"
		echo "}"
	} >"$dir/nginx.conf"
	echo "$dir"
}
start_nginx() { # start_nginx NAME PORT MODE
	local dir
	dir=$(nginx_conf "$1" "$2" "$3")
	$SRV nginx -p "$dir" -c "$dir/nginx.conf" -g 'daemon off;' 2>"$dir/logs/stderr" &
	PIDS+=($!)
}
proxy_rules() { # proxy_rules FILE L1BYTES PREFIX
	cat >"$1" <<-EOF
		server:
		  shutdown_grace: 1s
		cache:
		  l1_max_bytes: $2
		  key_prefix: "$3"
		rules:
		  - match: /products/{productId}
		    ttl: 30m
		    scope: shared
		    stale_while_revalidate: 1m
		    stale_if_error: 1h
		  - match: /misses/{m}
		    ttl: 30m
		    scope: shared
		  - match: /farmers/{farmerId}
		    ttl: 30m
		    scope: shared
		  - match: /users/{userId}/orders/{orderId}
		    ttl: 5m
		    scope: user
	EOF
}
start_proxy() { # start_proxy NAME PORT ADMINPORT L1BYTES
	proxy_rules "$WORK/$1.yaml" "$4" "${PREFIX}$1:"
	GOMAXPROCS=$SRV_N $SRV "$WORK/bin/harvest-proxy" -config "$WORK/$1.yaml" -listen "127.0.0.1:$2" \
		-admin-listen "127.0.0.1:$3" -upstream "http://$EMU" -redis "$REDIS" \
		-outbox "$WORK/outbox-$1" -log-level warn 2>"$WORK/$1.log" &
	PIDS+=($!)
}

for v in P_STOCK P_TUNED P_CEIL P_L1 A_L1 P_L2 A_L2; do free_port $v; done
say "starting nginx (stock-ish :$P_STOCK, tuned :$P_TUNED), the ceiling :$P_CEIL, harvest-proxy L1 :$P_L1 and L2 :$P_L2"
start_nginx stock "$P_STOCK" stock
start_nginx tuned "$P_TUNED" tuned
GOMAXPROCS=$SRV_N $SRV "$HB" ceiling -listen "127.0.0.1:$P_CEIL" -from "http://$EMU$URI" 2>"$WORK/ceiling.log" &
PIDS+=($!)
start_proxy l1 "$P_L1" "$A_L1" 64MiB
start_proxy l2 "$P_L2" "$A_L2" 0
for p in "$P_STOCK" "$P_TUNED" "$P_CEIL" "$P_L1" "$P_L2"; do
	wait_http "http://127.0.0.1:$p/" || { echo "bench: nothing answers on :$p" >&2; tail -n 5 "$WORK"/*.log "$WORK"/nginx-*/logs/* >&2 || true; exit 1; }
done
for a in "$A_L1" "$A_L2"; do # a replica serves hits only once subscribed to invalidations
	for _ in $(seq 1 100); do
		curl -s "http://127.0.0.1:$a/_proxy/stats" | grep -q '"invalidation_trusted":true' && break
		sleep 0.1
	done
done

# Warm every server and check it answers the document from its cache.
check_hit() { # check_hit NAME PORT WANT
	local hdrs status xc
	for _ in 1 2 3; do curl -s -o /dev/null "http://127.0.0.1:$2$URI"; done
	hdrs=$(curl -s -D - -o /dev/null "http://127.0.0.1:$2$URI" | tr -d '\r')
	status=$(head -1 <<<"$hdrs" | cut -d' ' -f2)
	xc=$(grep -i '^x-cache:' <<<"$hdrs" | cut -d' ' -f2 || true)
	if [ "$status" != 200 ] || [ "$xc" != "$3" ]; then
		broke "$1 does not answer from its cache (status $status, X-Cache '$xc', want 200 '$3')"
	fi
}
check_hit nginx_stock "$P_STOCK" HIT
check_hit nginx_tuned "$P_TUNED" HIT
check_hit ceiling "$P_CEIL" ""
check_hit l1 "$P_L1" HIT-L1
check_hit l2 "$P_L2" HIT-L2
if [ "$SRV_N" -ge 1 ]; then
	say "nginx processes under the tuned master (workers + cache manager/loader): $(pgrep -P "$(cat "$WORK/nginx-tuned/nginx.pid")" | wc -l); server CPUs: ${SRV_CPUS:-all}; wrk: 1 thread${LOAD:+ on CPU $((ncpu - 1))}"
fi

cat >"$WORK/report.lua" <<'EOF'
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %.1f %.3f %.3f %d\n",
    summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    e.connect + e.read + e.write + e.status + e.timeout))
end
EOF
ROWS=(nginx_stock:$P_STOCK nginx_tuned:$P_TUNED ceiling:$P_CEIL l1:$P_L1 l2:$P_L2)
run_wrk() { # run_wrk NAME PORT DURATION [record]
	local out
	out=$($LOAD wrk -t1 -c"$CONNS" -d"$3" --latency -s "$WORK/report.lua" "http://127.0.0.1:$2$URI" 2>&1) || { broke "wrk $1"; return; }
	[ "${4:-}" = record ] || return 0
	read -r _ rps p50 p99 errs <<<"$(grep '^RESULT' <<<"$out")"
	printf '%s_rps=%s\n%s_p50=%s\n%s_p99=%s\n%s_errors=%s\n' "$1" "$rps" "$1" "$p50" "$1" "$p99" "$1" "$errs" >>"$RES"
	printf '   round %s %-12s %10s req/s  p50 %s ms  p99 %s ms  errors %s\n' "$round" "$1" "$rps" "$p50" "$p99" "$errs" >&2
}
say "wrk: -t1 -c$CONNS, warm-up 2s, then $ROUNDS rounds of -d$DUR per row, rows interleaved"
round=0
for row in "${ROWS[@]}"; do run_wrk "${row%%:*}" "${row##*:}" 2s; done
for round in $(seq 1 "$ROUNDS"); do
	for row in "${ROWS[@]}"; do run_wrk "${row%%:*}" "${row##*:}" "$DUR" record; done
done

say "miss: $((MISSES - 1)) distinct documents, directly and through harvest-proxy (L1 + Redis), paired"
$LOAD "$HB" miss -direct "http://$EMU$DOCS" -proxy "http://127.0.0.1:$P_L1$DOCS" -metrics "http://127.0.0.1:$A_L1/metrics" \
	-prefix misses/m -n "$MISSES" >>"$RES" || broke "miss latency"

# The HTTP servers are done: free the CPUs for the rest.
for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done

say "realistic mix: Zipf over 10k documents, 95% reads, through harvest-proxy (internal/bench BenchmarkMix)"
HARVEST_TEST_EMULATOR=$EMU HARVEST_BENCH_RESULTS=$RES \
	go test -run '^$' -bench BenchmarkMix -benchtime 1x -timeout 10m ./internal/bench/ >"$WORK/mix.out" 2>&1 ||
	{ tail -20 "$WORK/mix.out" >&2; broke "realistic mix"; }

micro() { # micro TITLE PKG PATTERN [benchtime] [flags (default -benchmem)]
	local out
	if out=$(go test -run '^$' -bench "$3" ${5--benchmem} -benchtime "${4:-1s}" "$2" 2>&1); then
		printf '%s\n' "$1"
		awk '/^Benchmark/ {n=$1; sub(/-[0-9]+$/, "", n); line=sprintf("  %-40s", n); for (i=3; i<=NF; i+=2) line=line sprintf(" %12s %s", $i, $(i+1)); print line}' <<<"$out"
	else
		printf '%s: FAILED\n%s\n' "$1" "$(tail -5 <<<"$out")"
		broke "$1"
	fi
}
say "Go micro-benchmarks and the emitter ratio"
{
	micro "rules (300 rules)" ./rules/ 'BenchmarkMatch'
	micro "classify" ./classify/ 'BenchmarkClassify'
	micro "proxy/cache" ./proxy/cache/ 'BenchmarkL1Get|BenchmarkValid|BenchmarkLookupL1'
	micro "proxy hit path (Handle, in process; L2 with 64 callers, L1 off)" ./proxy/ 'BenchmarkHitL1|BenchmarkHitL2'
	micro "proxy/cache L2 (real Redis)" ./proxy/cache/ 'BenchmarkL2Get'
	micro "gRPC GetDocument, 64 callers on loopback: a bare grpc-go server from a map vs an L1 hit through the proxy" ./proxy/ 'BenchmarkGRPCGetDocument' 3s
	HARVEST_TEST_EMULATOR=$EMU micro "gRPC GetDocument miss: median added over calling the emulator directly (paired)" ./proxy/ 'BenchmarkGRPCMissAddedLatency' 300x
	micro "emitter (256 in flight, same broker)" ./emitter/ 'BenchmarkEmitConfirms|BenchmarkBareAmqpConfirms' 3s
	micro "write latency the emitter adds (two proxies written to alternately, same emulator)" ./proxy/ 'BenchmarkWriteEventsAddedLatency' 300x
	HARVEST_TEST_EMULATOR=$EMU micro "events per second from the Write stream (10 writes in flight, real broker; direct-writes/s: the same stream straight to the emulator)" ./proxy/conformance/ 'BenchmarkWriteStreamEvents' 300x
	HARVEST_TEST_EMULATOR=$EMU micro "Listen fan-out: documents streamed upstream for N gRPC listeners on one 20-document query and one change, directly vs through the proxy (upstream meters)" ./proxy/conformance/ 'BenchmarkListenFanOutReads' 1x ''
	HARVEST_TEST_EMULATOR=$EMU micro "Listen fan-out: from sending a write to the 100th listener's copy of it, 100 direct listeners vs 100 through the proxy (p50 of 9)" ./proxy/conformance/ 'BenchmarkListenFanOutLatency' 1x ''
	HARVEST_TEST_EMULATOR=$EMU micro "Listen fan-out: proxy memory (live heap and goroutine stacks after GC) per shared target (20 docs), per client (own connection, one target), per extra target on a stream" ./proxy/conformance/ 'BenchmarkListenFanOutMemory' 1x ''
} >"$WORK/micro.txt"
awk '/BenchmarkEmitConfirms/ {for (i=1;i<NF;i++) if ($(i+1)=="msgs/s") print "emit_msgs_per_s=" $i}
     /BenchmarkBareAmqpConfirms/ {for (i=1;i<NF;i++) if ($(i+1)=="msgs/s") print "bare_msgs_per_s=" $i}' "$WORK/micro.txt" >>"$RES"

echo
echo "setup=$(nproc) cores ($(uptime | sed 's/.*load average: /load /')); servers on CPU ${SRV_CPUS:-any} (GOMAXPROCS=$SRV_N, nginx workers=$SRV_N); wrk -t1 -c$CONNS -d$DUR x $ROUNDS rounds${LOAD:+ on CPU $((ncpu - 1))}; same document, $(curl -s -o /dev/null -w '%{size_download}' "http://$EMU$URI") bytes" >>"$RES"
"$HB" table "$RES"
echo
cat "$WORK/micro.txt"
if [ ${#BROKEN[@]} -gt 0 ]; then
	printf '\nbench: %d step(s) broke: %s\n' "${#BROKEN[@]}" "${BROKEN[*]}" >&2
	exit 1
fi
