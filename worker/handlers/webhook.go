package handlers

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/harvest-hub/edge/worker"
)

// Webhook headers. The signature is "sha256=" + hex(HMAC-SHA256(secret, timestamp + "." + body)):
// signing the timestamp with the body lets receivers refuse replays of old deliveries.
const (
	HeaderTimestamp = "X-Harvest-Timestamp"
	HeaderSignature = "X-Harvest-Signature"
	// HeaderIdempotencyKey carries the event id, for receivers that deduplicate.
	HeaderIdempotencyKey = "Idempotency-Key"
	// HeaderAttempt is the delivery attempt, counting from 1.
	HeaderAttempt = "X-Harvest-Attempt"
)

// Webhook POSTs each event, as the structured CloudEvent JSON the proxy published, to
// one URL. A 2xx answer is success; anything else (including redirects, which are not
// followed) is an error naming the status.
type Webhook struct {
	url    string
	secret []byte
	client *http.Client
	now    func() time.Time
}

// NewWebhook posts to target, signing with secret; timeout bounds one call.
func NewWebhook(target, secret string, timeout time.Duration) (*Webhook, error) {
	u, err := url.Parse(target)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("webhook: url %q is not an absolute http(s) URL", target)
	}
	if secret == "" {
		return nil, errors.New("webhook: no secret: receivers need it to verify deliveries (set secret, e.g. secret: ${WEBHOOK_SECRET})")
	}
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	return &Webhook{
		url:    target,
		secret: []byte(secret),
		client: &http.Client{
			Timeout: timeout,
			// A redirected POST would be re-sent (or turned into a GET) somewhere the
			// configuration never named: treat it as the failure it is.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		now: time.Now,
	}, nil
}

// StatusError is a non-2xx answer from the webhook receiver.
type StatusError struct {
	Code int
	Body string // the start of the answer's body, for the dead-letter reason
}

func (e *StatusError) Error() string {
	if e.Body == "" {
		return fmt.Sprintf("webhook answered %d %s", e.Code, http.StatusText(e.Code))
	}
	return fmt.Sprintf("webhook answered %d %s: %s", e.Code, http.StatusText(e.Code), e.Body)
}

// Handle posts ev.Raw, signed.
func (w *Webhook) Handle(ctx context.Context, ev worker.Event) error {
	ts := strconv.FormatInt(w.now().Unix(), 10)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.url, bytes.NewReader(ev.Raw))
	if err != nil {
		return fmt.Errorf("webhook: build request: %w", err)
	}
	req.Header.Set("Content-Type", "application/cloudevents+json")
	req.Header.Set("User-Agent", "harvest-worker")
	req.Header.Set(HeaderTimestamp, ts)
	req.Header.Set(HeaderSignature, sign(w.secret, ts, ev.Raw))
	req.Header.Set(HeaderIdempotencyKey, ev.ID)
	req.Header.Set(HeaderAttempt, strconv.Itoa(max(ev.Attempt, 1)))

	resp, err := w.client.Do(req)
	if err != nil {
		return fmt.Errorf("webhook: post to %s: %w", redact(w.url), err)
	}
	defer resp.Body.Close()
	snippet, _ := io.ReadAll(io.LimitReader(resp.Body, 256))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // drain, to reuse the connection
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return &StatusError{Code: resp.StatusCode, Body: strings.TrimSpace(string(snippet))}
	}
	return nil
}

// redact drops credentials and the query (which may hold tokens) from a URL for logs.
func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(invalid url)"
	}
	u.User = nil
	u.RawQuery = ""
	return u.String()
}

func sign(secret []byte, timestamp string, body []byte) string {
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(timestamp))
	mac.Write([]byte{'.'})
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

// Sign returns the X-Harvest-Signature value for body sent at timestamp (unix seconds).
func Sign(secret, timestamp string, body []byte) string {
	return sign([]byte(secret), timestamp, body)
}

// Errors of VerifySignature.
var (
	ErrBadSignature = errors.New("webhook signature does not match")
	ErrStaleRequest = errors.New("webhook timestamp outside the allowed skew")
	ErrMalformed    = errors.New("webhook signature headers malformed")
)

// VerifySignature checks a delivery the way a receiver must: timestamp is the
// X-Harvest-Timestamp header, body the raw request body (before any JSON parsing),
// header the X-Harvest-Signature header. It refuses timestamps more than maxSkew from
// now (replays) and compares in constant time.
func VerifySignature(secret, timestamp, body, header string, maxSkew time.Duration) error {
	return verifyAt(time.Now(), secret, timestamp, body, header, maxSkew)
}

func verifyAt(now time.Time, secret, timestamp, body, header string, maxSkew time.Duration) error {
	ts, err := strconv.ParseInt(timestamp, 10, 64)
	if err != nil {
		return fmt.Errorf("%w: timestamp %q is not unix seconds", ErrMalformed, timestamp)
	}
	if skew := now.Sub(time.Unix(ts, 0)).Abs(); skew > maxSkew {
		return fmt.Errorf("%w: %v off, at most %v allowed", ErrStaleRequest, skew.Round(time.Second), maxSkew)
	}
	hexSig, ok := strings.CutPrefix(header, "sha256=")
	if !ok {
		return fmt.Errorf("%w: signature must start with sha256=", ErrMalformed)
	}
	got, err := hex.DecodeString(hexSig)
	if err != nil {
		return fmt.Errorf("%w: signature is not hex", ErrMalformed)
	}
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(timestamp + "." + body))
	if !hmac.Equal(got, mac.Sum(nil)) {
		return ErrBadSignature
	}
	return nil
}
