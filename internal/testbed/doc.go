// Package testbed is the test support around the project's upstream: Google's Cloud
// Firestore emulator, an upstream meter in front of it, and a TCP relay for fault tests.
//
// Promises:
//   - Emulator starts one emulator per test binary, lazily, on a free loopback port (or
//     uses the one named by HARVEST_TEST_EMULATOR=host:port), and Main stops it when the
//     tests end. The Java process is in its own process group and dies with the test
//     binary even when Main is not used or the binary is killed.
//   - NewProject gives each test its own project id, so tests never see each other's data;
//     the project is wiped when the test ends.
//   - Meter counts upstream requests by Firestore REST method and the document reads
//     Firestore would bill for them, and injects latency, errors and refused connections
//     on command. It also counts Listen, on gRPC and on the WebChannel Listen channel:
//     the documents the upstream streamed and the targets added upstream, by the
//     Authorization that added them (listenmeter.go), each counted once.
//   - Relay cuts or stalls a TCP dependency without touching the shared server.
//
// Concurrency: every exported function and method is safe for concurrent use; tests run
// with t.Parallel may share the emulator, a Meter and a Relay.
//
// Nothing here talks to a non-loopback address. A missing dependency is a test failure
// that names what to install, never a skip.
package testbed
