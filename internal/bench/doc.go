// Package bench holds the realistic-mix benchmark of `make bench` (BenchmarkMix in
// mix_test.go): it is a test binary so that it can use the upstream meter of
// internal/testbed. Nothing here is imported by the product.
package bench
