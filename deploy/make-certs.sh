#!/usr/bin/env bash
# make-certs.sh: a self-signed TLS certificate and key for development, for nginx's TLS
# mode (nginx/README.md). Usage:
#
#   deploy/make-certs.sh [DIR]      # default DIR: deploy/certs (next to this script)
#
# Writes DIR/tls.crt (PEM certificate, valid for localhost and 127.0.0.1, 365 days) and
# DIR/tls.key (PEM ECDSA P-256 private key, mode 0600). Existing files are kept, so a
# certificate a browser or OS already trusts stays valid; FORCE=1 replaces them.
# Browsers do not trust a self-signed certificate by default: import DIR/tls.crt, or
# accept the warning. Never use these files in production; use certificates from a CA.
set -euo pipefail

die() { printf 'make-certs: %s\n' "$*" >&2; exit 1; }

dir=${1:-"$(cd "$(dirname "$0")" && pwd)/certs"}
command -v openssl >/dev/null || die "openssl not found (apt-get install openssl)"
mkdir -p "$dir"
crt="$dir/tls.crt" key="$dir/tls.key"

if [ -s "$crt" ] && [ -s "$key" ] && [ "${FORCE:-0}" != 1 ]; then
	printf 'make-certs: %s and %s exist; keeping them (FORCE=1 replaces them)\n' "$crt" "$key"
	exit 0
fi

# An explicit config, so the extensions are the same whatever the system openssl.cnf says.
cnf=$(mktemp)
trap 'rm -f "$cnf"' EXIT
cat >"$cnf" <<'CNF'
[req]
distinguished_name = dn
x509_extensions    = ext
prompt             = no
[dn]
CN = localhost
O  = Harvest Hub development
[ext]
subjectAltName         = DNS:localhost, IP:127.0.0.1, IP:::1
basicConstraints       = critical, CA:FALSE
keyUsage               = critical, digitalSignature
extendedKeyUsage       = serverAuth
subjectKeyIdentifier   = hash
CNF

# Keys never belong in git.
[ -e "$dir/.gitignore" ] || printf '*\n' >"$dir/.gitignore"

umask 077
if ! out=$(openssl req -x509 -config "$cnf" -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
	-sha256 -days 365 -nodes -keyout "$key.tmp" -out "$crt.tmp" 2>&1); then
	rm -f "$key.tmp" "$crt.tmp"
	die "openssl could not create the certificate: $out"
fi
chmod 0644 "$crt.tmp"
mv -f "$key.tmp" "$key"
mv -f "$crt.tmp" "$crt"
printf 'make-certs: wrote %s and %s (CN=localhost, SAN localhost, 127.0.0.1, ::1)\n' "$crt" "$key"
