package handlers

import (
	"context"
	"log/slog"

	"github.com/harvest-hub/edge/worker"
)

// Log writes one structured line per event: id, type and subject.
type Log struct{ logger *slog.Logger }

// NewLog logs to logger, or slog.Default() when nil.
func NewLog(logger *slog.Logger) *Log {
	if logger == nil {
		logger = slog.Default()
	}
	return &Log{logger: logger}
}

// Handle logs ev. It never fails.
func (l *Log) Handle(ctx context.Context, ev worker.Event) error {
	l.logger.InfoContext(ctx, "firestore event", "id", ev.ID, "type", ev.Type, "subject", ev.Subject)
	return nil
}
