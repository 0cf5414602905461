// Command harvest-seed loads the Harvest Hub sample data, or a JSON file of documents,
// into Firestore: the local emulator or a real project. Run it with -h for usage.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"cloud.google.com/go/firestore"

	"github.com/harvest-hub/edge/internal/buildinfo"
	"github.com/harvest-hub/edge/internal/seed"
)

const defaultProject = "harvest-hub-dev"

// loadTimeout bounds the whole run: the sample is about 1,000 documents, seconds of work.
const loadTimeout = 5 * time.Minute

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run is main without the process: it parses args, seeds, and returns the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("harvest-seed", flag.ContinueOnError)
	fs.SetOutput(stderr)
	project := fs.String("project", defaultProject, "Firestore `PROJECT` id to write to")
	emulator := fs.String("emulator", os.Getenv("FIRESTORE_EMULATOR_HOST"),
		"Firestore emulator `HOST:PORT` (default: $FIRESTORE_EMULATOR_HOST); empty means real Firestore")
	file := fs.String("file", "", "JSON `FILE` of documents to load (default: the built-in Harvest Hub sample)")
	showVersion := fs.Bool("version", false, "print the version and exit")
	fs.Usage = func() { usage(fs) }
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "harvest-seed: unexpected argument %q (flags only; see -h)\n", fs.Arg(0))
		return 2
	}
	if *showVersion {
		fmt.Fprintln(stdout, buildinfo.String("harvest-seed"))
		return 0
	}

	if err := seedProject(ctx, *project, *emulator, *file, stdout); err != nil {
		fmt.Fprintf(stderr, "harvest-seed: %v\n", err)
		return 1
	}
	return 0
}

func seedProject(ctx context.Context, project, emulator, file string, out io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, loadTimeout)
	defer cancel()

	// Read and check the input before touching any database: a bad file changes nothing.
	docs, source, err := loadInput(file)
	if err != nil {
		return err
	}

	target := "real Cloud Firestore (Application Default Credentials)"
	if emulator != "" {
		if err := checkEmulator(ctx, emulator); err != nil {
			return err
		}
		// The Go client's own emulator mode: plaintext gRPC plus the emulator's admin
		// token ("Bearer owner"). It reads the address only from this variable, so set
		// it here, where -emulator may have overridden the inherited value.
		if err := os.Setenv("FIRESTORE_EMULATOR_HOST", emulator); err != nil {
			return fmt.Errorf("set FIRESTORE_EMULATOR_HOST: %w", err)
		}
		target = "the emulator at " + emulator
	} else {
		fmt.Fprintf(out, "No -emulator and FIRESTORE_EMULATOR_HOST is unset: writing to REAL Cloud Firestore project %q.\n", project)
	}

	client, err := firestore.NewClient(ctx, project)
	if err != nil {
		return fmt.Errorf("connect to %s: %w", target, err)
	}
	defer client.Close()

	start := time.Now()
	n, err := seed.Load(ctx, client, docs)
	if err != nil {
		return fmt.Errorf("load %s into project %q on %s (%d documents written before the error): %w",
			source, project, target, n, err)
	}
	fmt.Fprintf(out, "Wrote %d documents (%s) to project %q on %s in %s.\n",
		n, source, project, target, time.Since(start).Round(time.Millisecond))
	return nil
}

func loadInput(file string) (seed.Docs, string, error) {
	if file == "" {
		return seed.Sample(), "the Harvest Hub sample", nil
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, "", fmt.Errorf("read seed file: %w", err)
	}
	docs, err := seed.ParseJSON(data)
	if err != nil {
		return nil, "", fmt.Errorf("seed file %s: %w", file, err)
	}
	return docs, file, nil
}

// checkEmulator fails fast, with the command to fix it, when nothing answers at addr;
// the client would otherwise retry until the timeout.
func checkEmulator(ctx context.Context, addr string) error {
	if strings.Contains(addr, "://") {
		return fmt.Errorf("-emulator takes HOST:PORT, not a URL: %q", addr)
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/", nil)
	if err != nil {
		return fmt.Errorf("emulator address %q: %w", addr, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("no Firestore emulator answers at %s (%w); start one with "+
			"`gcloud emulators firestore start --host-port=%s`", addr, err, addr)
	}
	resp.Body.Close()
	return nil
}

func usage(fs *flag.FlagSet) {
	w := fs.Output()
	fmt.Fprintf(w, `harvest-seed loads documents into Cloud Firestore: the built-in Harvest Hub sample
(8 farmers, 300 products under farmers/{id}/products and in the products catalogue,
40 users with 2-6 orders each under users/{id}/orders, a few sessions) or your own
JSON file. Existing documents with the same paths are overwritten; others are left alone.

Usage:
  harvest-seed [-project ID] [-emulator HOST:PORT] [-file FILE]

Examples:
  # start the emulator, then load the sample into project harvest-hub-dev
  gcloud emulators firestore start --host-port=127.0.0.1:8686 &
  harvest-seed -emulator 127.0.0.1:8686

  # load your own documents
  harvest-seed -emulator 127.0.0.1:8686 -project my-app -file seed.json

Without -emulator and without FIRESTORE_EMULATOR_HOST it writes to REAL Cloud Firestore,
authenticated with Application Default Credentials (gcloud auth application-default login).

Flags:
`)
	fs.PrintDefaults()
	fmt.Fprintf(w, "\n%s\n", seed.FileFormat)
}
