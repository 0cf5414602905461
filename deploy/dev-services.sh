#!/usr/bin/env bash
# dev-services.sh: make sure what `make test` and `make run` need is installed and
# answering on loopback. Idempotent: it installs only what is missing (Debian packages
# via apt-get) and starts only what is stopped. It never stops, flushes or reconfigures a
# running server. Exit status non-zero, with the reason, when something cannot be had.
#
# Needs: Redis on 127.0.0.1:6379, RabbitMQ on 127.0.0.1:5672, the nginx binary (tests
# run their own nginx instances on free loopback ports), Java 17 and Google's Cloud
# Firestore emulator (the Google Cloud CLI component), Node.js and npm for the Firebase
# JS SDK tests, Debian's chromium-headless-shell for the browser suite, wrk for `make bench`.
set -euo pipefail

say() { printf 'dev-services: %s\n' "$*"; }
die() { printf 'dev-services: FAILED: %s\n' "$*" >&2; exit 1; }

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

apt_updated=0
apt_install() {
	local missing=()
	for pkg in "$@"; do
		dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	command -v apt-get >/dev/null || die "missing packages ${missing[*]} and no apt-get to install them"
	if [ $apt_updated -eq 0 ]; then
		say "apt-get update"
		$SUDO apt-get update -qq >/dev/null || die "apt-get update failed"
		apt_updated=1
	fi
	say "installing ${missing[*]}"
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
		|| die "apt-get install ${missing[*]} failed"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for() { # wait_for SECONDS DESCRIPTION COMMAND...
	local secs=$1 what=$2; shift 2
	for _ in $(seq 1 $((secs * 5))); do
		"$@" && return 0
		sleep 0.2
	done
	die "$what did not answer within ${secs}s"
}

# --- packages ---------------------------------------------------------------
apt_install redis-server redis-tools rabbitmq-server nginx wrk openjdk-17-jre-headless curl ca-certificates gettext-base openssl

# --- Redis --------------------------------------------------------------------
redis_up() { [ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" = "PONG" ]; }
if ! redis_up; then
	say "starting Redis on 127.0.0.1:6379"
	$SUDO mkdir -p /var/lib/redis /var/log/redis
	$SUDO redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" \
		--appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log \
		|| die "redis-server would not start (see /var/log/redis/ci.log)"
	wait_for 20 "Redis on 127.0.0.1:6379" redis_up
fi
say "Redis answers on 127.0.0.1:6379"

# --- RabbitMQ -----------------------------------------------------------------
amqp_up() { port_open 5672; }
if ! amqp_up; then
	say "starting RabbitMQ on 127.0.0.1:5672 (takes a few seconds)"
	$SUDO rabbitmq-server -detached >/dev/null 2>&1 || true
	wait_for 90 "RabbitMQ on 127.0.0.1:5672" amqp_up
fi
# The port opens before the broker accepts logins; await_startup waits for the app.
if command -v rabbitmqctl >/dev/null; then
	$SUDO timeout 60 rabbitmqctl await_startup >/dev/null 2>&1 || say "warning: rabbitmqctl await_startup did not confirm; going on"
fi
say "RabbitMQ answers on 127.0.0.1:5672"

# --- nginx --------------------------------------------------------------------
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || die "nginx binary not found after install"
say "nginx $(/usr/sbin/nginx -v 2>&1 | sed 's/.*nginx\///') present (tests start their own instances)"

# --- Node.js, for the Firebase JS SDK conformance suite ------------------------
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
	apt_install nodejs npm
fi
command -v node >/dev/null && command -v npm >/dev/null || die "node and npm not found after installing nodejs npm"
say "Node.js $(node --version) and npm $(npm --version) present"

# --- Headless Chromium, for the browser suite (proxy/conformance/browser) ---------
# Debian's build; the suite drives it with puppeteer-core (it downloads no browser).
apt_install chromium-headless-shell
command -v chromium-headless-shell >/dev/null || die "chromium-headless-shell not found after installing it"
say "Chromium: $(chromium-headless-shell --version 2>/dev/null | head -1)"

# --- The Compose file checker (no Docker engine needed: --no-install-recommends keeps
# the engine out) ----------------------------------------------------------------
if ! docker compose version >/dev/null 2>&1 && ! command -v docker-compose >/dev/null; then
	apt_install docker-compose
fi
say "Compose checker: $( (docker compose version 2>/dev/null || docker-compose version --short 2>/dev/null) | head -1)"

# --- Java and the Firestore emulator ------------------------------------------
command -v java >/dev/null || die "java not found after installing openjdk-17-jre-headless"
find_emulator_jar() {
	local roots=()
	[ -n "${CLOUDSDK_ROOT_DIR:-}" ] && roots+=("$CLOUDSDK_ROOT_DIR")
	if command -v gcloud >/dev/null; then
		roots+=("$(gcloud info --format='value(installation.sdk_root)' 2>/dev/null || true)")
	fi
	roots+=(/usr/lib/google-cloud-sdk /usr/share/google-cloud-sdk /opt/google-cloud-sdk "$HOME/google-cloud-sdk")
	for r in "${roots[@]}"; do
		[ -n "$r" ] && [ -f "$r/platform/cloud-firestore-emulator/cloud-firestore-emulator.jar" ] \
			&& { echo "$r/platform/cloud-firestore-emulator/cloud-firestore-emulator.jar"; return 0; }
	done
	return 1
}
if ! jar=$(find_emulator_jar); then
	# The emulator is a Google Cloud CLI component, packaged by Google, not Debian.
	( apt_install google-cloud-cli-firestore-emulator ) 2>/dev/null || true
	jar=$(find_emulator_jar) || die "Google's Cloud Firestore emulator is not installed. Install the Google Cloud CLI and its component: 'apt-get install google-cloud-cli-firestore-emulator' (from Google's apt repository) or 'gcloud components install cloud-firestore-emulator'."
fi
say "Firestore emulator: $jar"
