#!/usr/bin/env bash
# bench.sh: the benchmarks of `make bench`. Each figure is printed beside a baseline
# measured in the same run on the same machine; nothing here asserts a time.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "== rules matching (300 rules) =="
go test -run '^$' -bench 'BenchmarkMatch' -benchmem ./rules/
