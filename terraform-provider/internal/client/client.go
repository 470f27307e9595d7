// Package client is a typed HTTP client for the GCL control plane API.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/terraform-plugin-log/tflog"
)

// DefaultEndpoint is used when neither the configuration nor the environment names one.
const DefaultEndpoint = "http://127.0.0.1:4280/api"

// Config holds everything needed to build a Client; zero values get sensible defaults.
type Config struct {
	Endpoint   string
	APIKey     string
	UserAgent  string
	HTTPClient *http.Client
	// MaxRetries bounds the extra attempts after a transport error, a 429 or a 5xx (0: none).
	MaxRetries int
	// MinBackoff and MaxBackoff bound the wait between attempts (doubling from MinBackoff).
	MinBackoff time.Duration
	MaxBackoff time.Duration
}

// Client talks to one GCL control plane.
type Client struct {
	base       *url.URL
	apiKey     string
	userAgent  string
	http       *http.Client
	maxRetries int
	minBackoff time.Duration
	maxBackoff time.Duration
}

// New validates the configuration and returns a Client.
func New(cfg Config) (*Client, error) {
	endpoint := strings.TrimRight(strings.TrimSpace(cfg.Endpoint), "/")
	if endpoint == "" {
		endpoint = DefaultEndpoint
	}
	base, err := url.Parse(endpoint)
	if err != nil {
		return nil, fmt.Errorf("invalid endpoint %q: %w", endpoint, err)
	}
	if base.Scheme != "http" && base.Scheme != "https" {
		return nil, fmt.Errorf("invalid endpoint %q: scheme must be http or https", endpoint)
	}
	if base.Host == "" {
		return nil, fmt.Errorf("invalid endpoint %q: missing host", endpoint)
	}
	c := &Client{
		base:       base,
		apiKey:     cfg.APIKey,
		userAgent:  cfg.UserAgent,
		http:       cfg.HTTPClient,
		maxRetries: cfg.MaxRetries,
		minBackoff: cfg.MinBackoff,
		maxBackoff: cfg.MaxBackoff,
	}
	if c.http == nil {
		c.http = &http.Client{Timeout: 30 * time.Second}
	}
	if c.userAgent == "" {
		c.userAgent = "terraform-provider-prefect-gcl"
	}
	if c.maxRetries < 0 {
		c.maxRetries = 0
	}
	if c.minBackoff <= 0 {
		c.minBackoff = 250 * time.Millisecond
	}
	if c.maxBackoff < c.minBackoff {
		c.maxBackoff = 10 * time.Second
	}
	return c, nil
}

// Endpoint returns the normalised base URL, e.g. for diagnostics (never contains the key).
func (c *Client) Endpoint() string { return c.base.String() }

// do sends one logical request, retrying transport errors, 429 and 5xx answers, and decodes a
// 2xx body into out (when out is non-nil). Any other status becomes an *APIError.
func (c *Client) do(ctx context.Context, method, path string, body, out any) error {
	var payload []byte
	if body != nil {
		var err error
		if payload, err = json.Marshal(body); err != nil {
			return fmt.Errorf("encoding request body: %w", err)
		}
	}
	// Joined by hand: url.JoinPath would clean a (valid) limit name such as "..".
	target := c.base.String() + "/" + path
	for attempt := 0; ; attempt++ {
		resp, data, err := c.send(ctx, method, target, payload)
		retryable := err != nil || resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500
		if !retryable || attempt >= c.maxRetries {
			if err != nil {
				return fmt.Errorf("%s /%s: %w", method, path, err)
			}
			return c.decode(method, "/"+path, resp, data, out)
		}
		wait := c.backoff(attempt, resp)
		tflog.Debug(ctx, "retrying GCL API request", map[string]any{
			"method": method, "path": "/" + path, "attempt": attempt + 1, "wait": wait.String(),
		})
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return fmt.Errorf("%s /%s: %w", method, path, ctx.Err())
		case <-timer.C:
		}
	}
}

func (c *Client) send(ctx context.Context, method, target string, payload []byte) (*http.Response, []byte, error) {
	var reader io.Reader
	if payload != nil {
		reader = bytes.NewReader(payload)
	}
	req, err := http.NewRequestWithContext(ctx, method, target, reader)
	if err != nil {
		return nil, nil, err
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", c.userAgent)
	if payload != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.apiKey != "" {
		req.Header.Set("Authorization", "Bearer "+c.apiKey)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return nil, nil, err
	}
	tflog.Debug(ctx, "GCL API request", map[string]any{
		"method": method, "url": target, "status": resp.StatusCode,
	})
	return resp, data, nil
}

func (c *Client) decode(method, path string, resp *http.Response, data []byte, out any) error {
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		if out == nil {
			return nil
		}
		if len(bytes.TrimSpace(data)) == 0 {
			return fmt.Errorf("%s %s: HTTP %d with an empty body, expected JSON", method, path, resp.StatusCode)
		}
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("%s %s: decoding response: %w", method, path, err)
		}
		return nil
	}
	apiErr := &APIError{StatusCode: resp.StatusCode, Method: method, Path: path}
	var envelope struct {
		Message string          `json:"message"`
		Detail  any             `json:"detail"`
		Errors  json.RawMessage `json:"errors"`
	}
	if json.Unmarshal(data, &envelope) == nil {
		apiErr.Message = envelope.Message
		if apiErr.Message == "" {
			if s, ok := envelope.Detail.(string); ok {
				apiErr.Message = s
			}
		}
		if len(envelope.Errors) > 0 && string(envelope.Errors) != "null" {
			apiErr.Details = string(envelope.Errors)
		}
	}
	if apiErr.Message == "" {
		apiErr.Message = http.StatusText(resp.StatusCode)
	}
	return apiErr
}

// backoff honours Retry-After (seconds, possibly decimal, or an HTTP date) and otherwise
// doubles from MinBackoff; both are capped by MaxBackoff.
func (c *Client) backoff(attempt int, resp *http.Response) time.Duration {
	if resp != nil {
		if d, ok := parseRetryAfter(resp.Header.Get("Retry-After"), time.Now()); ok {
			return min(d, c.maxBackoff)
		}
	}
	d := time.Duration(float64(c.minBackoff) * math.Pow(2, float64(attempt)))
	return min(d, c.maxBackoff)
}

func parseRetryAfter(value string, now time.Time) (time.Duration, bool) {
	value = strings.TrimSpace(value)
	if value == "" {
		return 0, false
	}
	if secs, err := strconv.ParseFloat(value, 64); err == nil {
		if secs < 0 || math.IsNaN(secs) || math.IsInf(secs, 0) {
			return 0, false
		}
		return time.Duration(secs * float64(time.Second)), true
	}
	if at, err := http.ParseTime(value); err == nil {
		return max(at.Sub(now), 0), true
	}
	return 0, false
}

// ErrNotFound is matched (errors.Is) by every 404 answer.
var ErrNotFound = errors.New("not found")

// ErrConflict is matched (errors.Is) by every 409 answer.
var ErrConflict = errors.New("conflict")

// APIError is a non-2xx answer from the control plane.
type APIError struct {
	StatusCode int
	Method     string
	Path       string
	Message    string
	// Details holds the raw per-field validation errors, when the server sent some.
	Details string
}

func (e *APIError) Error() string {
	msg := fmt.Sprintf("%s %s: HTTP %d: %s", e.Method, e.Path, e.StatusCode, e.Message)
	if e.Details != "" {
		msg += " " + e.Details
	}
	return msg
}

// Is lets callers use errors.Is(err, ErrNotFound) and errors.Is(err, ErrConflict).
func (e *APIError) Is(target error) bool {
	switch target {
	case ErrNotFound:
		return e.StatusCode == http.StatusNotFound
	case ErrConflict:
		return e.StatusCode == http.StatusConflict
	}
	return false
}
