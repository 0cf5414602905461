// Package conformance proves that harvest-proxy is transparent to the official
// Firestore clients: whatever a client does directly against the Firestore emulator,
// it does identically through the proxy.
//
// The package has no code of its own, only tests. Each suite runs one list of
// scenarios twice, once against the emulator and once through an in-process proxy
// (the sample rules.yaml, the real Redis under a random key prefix, L1 on, an upstream
// meter between proxy and emulator), each run in its own emulator project seeded with
// the Harvest Hub sample, and compares the two results scenario by scenario: documents,
// field values and their types, error codes. Only what must differ between two runs
// (server timestamps, generated document ids) is normalised away.
//
//   - goclient_test.go: cloud.google.com/go/firestore in REST mode.
//   - node_test.go and js/scenarios.mjs: the Firebase JS SDK (@firebase/firestore/lite)
//     under Node, installed from js/package-lock.json with `npm ci` (only when
//     js/node_modules does not match the lock).
//   - node_grpc_test.go with js/admin.mjs, js/fullsdk.mjs and js/reads.mjs: the Node
//     clients that speak gRPC to an emulator host, configured by nothing but the host:
//     firebase-admin 13 with its defaults (FIRESTORE_EMULATOR_HOST) and the full
//     Firebase SDK's Node build (`firebase/firestore`, connectFirestoreEmulator): get,
//     query, add, set, update, delete, batch, transaction, count and onSnapshot, and
//     repeated reads that must not reach the upstream meter.
//   - writestream_bench_test.go: `make bench`'s events per second from the Write stream.
//   - verify_test.go: the JS SDK's transaction commit with a "verify" write, as raw HTTP.
//   - fanout_test.go and fanout_leak_test.go with js/fanout.mjs (browser/fanout_test.go
//     is its WebChannel twin): many SDK clients listening to one target through the proxy see step by step what
//     a direct listener sees, while the upstream meter shows one listener's work; reads
//     of a listened target, user-scoped targets under emulator security rules, an
//     upstream cut, and 1,000 abandoned Listen streams that must leak nothing.
//   - fanout_bench_test.go: `make bench`'s fan-out rows (upstream documents for N
//     listeners directly and through the proxy, memory per client and per shared
//     target, write to the 100th listener's snapshot).
//
// Any difference between the direct and the proxied run is a proxy bug.
package conformance
