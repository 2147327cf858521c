package alerts

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// maxResponseBytes is how much of the webhook's answer is read (and dropped) so that the
// connection can be reused.
const maxResponseBytes = 4 << 10

// webhook POSTs alerts, one at a time, from a bounded queue: whoever fires never waits for
// it, and a webhook that hangs costs the queue's slots, not the call path.
type webhook struct {
	cfg      Webhook
	client   *http.Client
	logger   *slog.Logger
	failures *prometheus.CounterVec

	q      chan Alert
	stop   chan struct{}
	cancel context.CancelFunc // the attempt in flight
	done   chan struct{}
	once   sync.Once
}

func newWebhook(cfg Webhook, rt http.RoundTripper, logger *slog.Logger, failures *prometheus.CounterVec) *webhook {
	if rt == nil {
		rt = http.DefaultTransport.(*http.Transport).Clone()
	}
	ctx, cancel := context.WithCancel(context.Background())
	w := &webhook{
		cfg: cfg,
		client: &http.Client{
			Transport: rt,
			Timeout:   cfg.Timeout,
			// A redirect is not followed: the alert goes to the URL the operator wrote, and
			// a 3xx counts as a failed attempt.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		logger:   logger,
		failures: failures,
		q:        make(chan Alert, cfg.Queue),
		stop:     make(chan struct{}),
		cancel:   cancel,
		done:     make(chan struct{}),
	}
	go w.run(ctx)
	return w
}

// enqueue queues a for sending; false when the queue is full (a is dropped).
func (w *webhook) enqueue(a Alert) bool {
	select {
	case w.q <- a:
		return true
	default:
		return false
	}
}

func (w *webhook) run(ctx context.Context) {
	defer close(w.done)
	for {
		select {
		case <-w.stop:
			return
		case a := <-w.q:
			w.deliver(ctx, a)
		}
	}
}

// deliver sends a, retrying a bounded number of times, Backoff apart and doubling.
func (w *webhook) deliver(ctx context.Context, a Alert) {
	body, err := json.Marshal(a)
	if err != nil { // an Alert always marshals; kept for the day it might not
		w.logger.Error("alert not sent to the webhook", "rule", a.Rule, "err", err)
		return
	}
	backoff := w.cfg.Backoff
	attempts := 1 + *w.cfg.Retries
	for i := 1; ; i++ {
		err = w.post(ctx, body)
		if err == nil {
			return
		}
		if i == attempts || ctx.Err() != nil {
			break
		}
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
		backoff = min(2*backoff, maxBackoff)
	}
	w.failures.WithLabelValues(a.Rule).Inc()
	w.logger.Warn("alert not accepted by the webhook", "rule", a.Rule, "alert", a.Alert, "url", redactURL(w.cfg.URL), "attempts", attempts, "err", err)
}

// post is one attempt: a 2xx answer within Timeout accepts the alert.
func (w *webhook) post(ctx context.Context, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.cfg.URL, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "gatehouse-alerts")
	resp, err := w.client.Do(req)
	if err != nil {
		var ue interface{ Unwrap() error }
		if errors.As(err, &ue) { // *url.Error: its text repeats the URL, with any token in it
			err = ue.Unwrap()
		}
		return err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxResponseBytes))
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	return nil
}

// close stops the sender: the attempt in flight is given up once ctx ends; what is still
// queued is dropped and counted in the log.
func (w *webhook) close(ctx context.Context) {
	w.once.Do(func() { close(w.stop) })
	select {
	case <-w.done:
	case <-ctx.Done():
		w.cancel()
		<-w.done
	}
	w.cancel()
	if n := len(w.q); n > 0 {
		w.logger.Warn("alerts not sent to the webhook: the gateway is stopping", "queued", n)
	}
}
