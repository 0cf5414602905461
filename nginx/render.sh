#!/usr/bin/env bash
# render.sh OUTDIR: render this directory's nginx configuration without Docker, the way
# the official nginx image does: OUTDIR/nginx.conf, OUTDIR/snippets/*.conf, and
# OUTDIR/conf.d/NAME.conf from templates/NAME.conf.template through envsubst. Each
# placeholder listed in defaults.env takes its value from the environment when set
# there (even empty), else its default. Then: nginx -t -c OUTDIR/nginx.conf.
set -euo pipefail

die() { printf 'nginx/render.sh: %s\n' "$*" >&2; exit 1; }

here=$(cd "$(dirname "$0")" && pwd)
out=${1:-}
[ -n "$out" ] || die "usage: nginx/render.sh OUTDIR"
command -v envsubst >/dev/null || die "envsubst not found (apt-get install gettext-base)"

names=()
while IFS= read -r line || [ -n "$line" ]; do
	case $line in '' | '#'*) continue ;; esac
	name=${line%%=*}
	[[ $name =~ ^NGINX_[A-Z0-9_]+$ ]] || die "defaults.env: bad line: $line"
	names+=("$name")
	if [ -z "${!name+set}" ]; then
		export "$name=${line#*=}"
	else
		export "$name"
	fi
done <"$here/defaults.env"
# Only our placeholders are replaced: nginx's own $variables stay.
shell_format=$(printf '${%s} ' "${names[@]}")

mkdir -p "$out/conf.d" "$out/snippets"
cp "$here/nginx.conf" "$out/nginx.conf"
cp "$here"/snippets/*.conf "$out/snippets/"
for t in "$here"/templates/*.conf.template; do
	dst="$out/conf.d/$(basename "$t" .template)"
	envsubst "$shell_format" <"$t" >"$dst"
	if left=$(grep -o '\${\?NGINX_[A-Za-z0-9_]*' "$dst"); then
		die "$(basename "$t"): no value for ${left%%$'\n'*}"
	fi
done
printf 'nginx/render.sh: rendered into %s (NGINX_MODE=%s)\n' "$out" "$NGINX_MODE"
