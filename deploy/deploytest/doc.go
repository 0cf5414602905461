// Package deploytest holds the tests of the deployment files: compose.yaml, .env.example,
// deploy/Dockerfile, deploy/kubernetes, deploy/prometheus and deploy/grafana. It has no
// code of its own.
//
// What the tests promise a user who runs `docker compose up` or `kubectl apply -k`:
//   - every environment variable and flag given to harvest-proxy, harvest-worker and
//     harvest-seed is one the binary accepts (read from the real binaries' -h output and
//     the ${VAR}s of rules.yaml), so no setting is silently ignored;
//   - every long-running compose service has a health check, every depends_on waits for
//     one (service_healthy), and no always-on service depends on a profiled one;
//   - the health checks and Kubernetes probes ask paths the admin listeners really serve
//     (asked of the real binaries, started here), on the ports they really listen on;
//   - nginx's upstreams (nginx/) point at the ports the services listen on;
//   - no password, secret or token is written in compose.yaml, .env.example or the
//     Kubernetes files: only ${VAR} references without defaults, and Secret references;
//   - the Grafana dashboard is valid JSON and queries only metrics the Go code registers;
//   - compose.yaml passes the Compose checker (docker compose config, or Debian's
//     docker-compose) with .env.example as its .env, and refuses to start while the
//     passwords in it are empty.
//
// The binaries are built once per run (go build), so the tests need the Go toolchain.
// The Compose check needs `docker compose` or `docker-compose`
// (apt-get install --no-install-recommends docker-compose); it fails, naming the
// package, when neither is installed. No Docker engine is used.
package deploytest
