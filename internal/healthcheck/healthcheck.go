// Package healthcheck is the `healthcheck URL` subcommand of the Harvest Hub binaries:
// container images carry no shell or curl, so Compose and Docker health checks run the
// binary itself against its admin listener.
package healthcheck

import (
	"fmt"
	"io"
	"net/http"
	"time"
)

// Run checks that URL answers 2xx within two seconds: exit 0, else 1 with the reason
// on stderr (2 for a usage error).
func Run(args []string, stderr io.Writer) int {
	if len(args) != 1 {
		fmt.Fprintln(stderr, "usage: healthcheck URL   (e.g. http://127.0.0.1:9090/healthz)")
		return 2
	}
	resp, err := (&http.Client{Timeout: 2 * time.Second}).Get(args[0])
	if err != nil {
		fmt.Fprintln(stderr, "unhealthy:", err)
		return 1
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		fmt.Fprintln(stderr, "unhealthy:", resp.Status)
		return 1
	}
	return 0
}
