package rules

import (
	"context"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Store holds the Config in force and replaces it when the file changes.
//
// Concurrency: Current is a single atomic load and may be called from any goroutine
// on every request; the Config it returns never changes (a reload swaps in a new one).
// Reload, Watch, OnReload and Stats are safe to call concurrently; reloads are
// serialised, and subscribers are called one reload at a time, in registration order,
// on the goroutine that reloaded (a subscriber must not call Reload).
type Store struct {
	path string
	log  *slog.Logger

	current atomic.Pointer[Config]

	mu          sync.Mutex // serialises reloads; guards everything below
	subscribers []func(*Config)
	stats       ReloadStats
	lastSum     [sha256.Size]byte // content last tried, good or bad: Watch acts on changes only
	lastReadErr string            // so a missing file is logged once, not every poll
}

// ReloadStats counts reloads since the Store was made.
type ReloadStats struct {
	Reloads   uint64    // successful reloads after the first load
	Failures  uint64    // refused reloads: unreadable or invalid file
	LastError string    // the latest failure's reasons; "" after a success
	LoadedAt  time.Time // when the Config in force was loaded
}

// NewStore loads path once. It fails when that first load fails: a proxy must not
// start on rules it cannot read.
func NewStore(path string, log *slog.Logger) (*Store, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Store{path: path, log: log}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load rules: %w", err)
	}
	cfg, err := Parse(path, data, os.LookupEnv)
	if err != nil {
		return nil, fmt.Errorf("load rules:\n%w", err)
	}
	s.current.Store(cfg)
	s.lastSum = sha256.Sum256(data)
	s.stats.LoadedAt = time.Now()
	return s, nil
}

// Current returns the Config in force.
func (s *Store) Current() *Config { return s.current.Load() }

// Path is the file the Store reads.
func (s *Store) Path() string { return s.path }

// OnReload registers f to be called with each new Config after a successful reload.
func (s *Store) OnReload(f func(*Config)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.subscribers = append(s.subscribers, f)
}

// Stats returns the reload counters.
func (s *Store) Stats() ReloadStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

// Reload reads the file again. A file that cannot be read or is invalid is refused:
// the error (an ErrorList for an invalid file) is logged and returned, counted in
// Stats, and the Config in force stays.
func (s *Store) Reload() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	data, err := os.ReadFile(s.path)
	if err != nil {
		return s.refuse(fmt.Errorf("reload rules: %w", err))
	}
	return s.apply(data)
}

// apply parses data and swaps it in; s.mu is held.
func (s *Store) apply(data []byte) error {
	s.lastSum = sha256.Sum256(data)
	cfg, err := Parse(s.path, data, os.LookupEnv)
	if err != nil {
		return s.refuse(err)
	}
	s.current.Store(cfg)
	s.stats.Reloads++
	s.stats.LastError = ""
	s.stats.LoadedAt = time.Now()
	s.log.Info("rules reloaded", "file", s.path, "rules", len(cfg.Rules), "handlers", len(cfg.Worker.Handlers))
	for _, f := range s.subscribers {
		f(cfg)
	}
	return nil
}

// refuse records a failed reload; s.mu is held.
func (s *Store) refuse(err error) error {
	s.stats.Failures++
	s.stats.LastError = err.Error()
	s.log.Error("rules reload refused; the previous rules stay in force", "file", s.path, "err", err.Error())
	return err
}

// Watch polls the file every interval until ctx is done, reloading when its content
// changes. It compares content hashes rather than modification times, so it sees
// Kubernetes ConfigMap updates (a symlink swap) and ignores touches. A bad file is
// refused once per distinct content, not on every poll. Watch blocks; run it in a
// goroutine.
func (s *Store) Watch(ctx context.Context, interval time.Duration) {
	if interval <= 0 {
		interval = 2 * time.Second
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.poll()
		}
	}
}

func (s *Store) poll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	data, err := os.ReadFile(s.path)
	if err != nil {
		// Often transient (an editor or ConfigMap swap in progress): log each new
		// reason once and keep the rules in force.
		if msg := err.Error(); msg != s.lastReadErr {
			s.lastReadErr = msg
			s.log.Warn("rules file unreadable; the previous rules stay in force", "file", s.path, "err", msg)
		}
		return
	}
	s.lastReadErr = ""
	if sha256.Sum256(data) == s.lastSum {
		return
	}
	_ = s.apply(data) // logged and counted by apply
}
