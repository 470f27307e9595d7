package client

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

const testKey = "s3cr3t-key"

func newTestClient(t *testing.T, srv *httptest.Server, retries int) *Client {
	t.Helper()
	c, err := New(Config{
		Endpoint:   srv.URL + "/api/",
		APIKey:     testKey,
		MaxRetries: retries,
		MinBackoff: time.Millisecond,
		MaxBackoff: 50 * time.Millisecond,
	})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return c
}

func writeJSON(w http.ResponseWriter, status int, body any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(body)
}

func TestNewValidatesEndpoint(t *testing.T) {
	for _, bad := range []string{"ftp://host/api", "127.0.0.1:4280", "http://", "http://[::1"} {
		if _, err := New(Config{Endpoint: bad}); err == nil {
			t.Errorf("New(%q) succeeded, want an error", bad)
		}
	}
	c, err := New(Config{})
	if err != nil {
		t.Fatalf("New(default): %v", err)
	}
	if got := c.Endpoint(); got != DefaultEndpoint {
		t.Errorf("default endpoint = %q, want %q", got, DefaultEndpoint)
	}
	c, err = New(Config{Endpoint: " https://gcl.example.com/api/ "})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if got := c.Endpoint(); got != "https://gcl.example.com/api" {
		t.Errorf("endpoint = %q, want trailing slash and spaces trimmed", got)
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC)
	cases := []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"", 0, false},
		{"2", 2 * time.Second, true},
		{"0.25", 250 * time.Millisecond, true},
		{"-1", 0, false},
		{"soon", 0, false},
		{now.Add(3 * time.Second).Format(http.TimeFormat), 3 * time.Second, true},
		{now.Add(-time.Minute).Format(http.TimeFormat), 0, true},
	}
	for _, tc := range cases {
		got, ok := parseRetryAfter(tc.in, now)
		if got != tc.want || ok != tc.ok {
			t.Errorf("parseRetryAfter(%q) = %v, %v; want %v, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

func TestBackoffDoublesAndHonoursRetryAfter(t *testing.T) {
	c, err := New(Config{MinBackoff: 100 * time.Millisecond, MaxBackoff: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	want := []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond, 800 * time.Millisecond, time.Second}
	for attempt, w := range want {
		if got := c.backoff(attempt, nil); got != w {
			t.Errorf("backoff(%d) = %v, want %v", attempt, got, w)
		}
	}
	resp := &http.Response{Header: http.Header{"Retry-After": []string{"0.3"}}}
	if got := c.backoff(0, resp); got != 300*time.Millisecond {
		t.Errorf("backoff with Retry-After 0.3 = %v", got)
	}
	resp.Header.Set("Retry-After", "120")
	if got := c.backoff(0, resp); got != time.Second {
		t.Errorf("backoff with Retry-After 120 = %v, want capped at 1s", got)
	}
}

func TestRetriesOn5xxAnd429HonouringRetryAfter(t *testing.T) {
	var hits atomic.Int32
	var first, second time.Time
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch hits.Add(1) {
		case 1:
			first = time.Now()
			w.Header().Set("Retry-After", "0.04")
			writeJSON(w, http.StatusServiceUnavailable, map[string]any{"message": "busy"})
		case 2:
			second = time.Now()
			writeJSON(w, http.StatusTooManyRequests, map[string]any{"message": "slow down"})
		default:
			writeJSON(w, http.StatusOK, Limit{ID: "abc", Name: "db", Limit: 3, Active: true})
		}
	}))
	defer srv.Close()
	got, err := newTestClient(t, srv, 3).GetLimit(context.Background(), "db")
	if err != nil {
		t.Fatalf("GetLimit: %v", err)
	}
	if got.ID != "abc" || hits.Load() != 3 {
		t.Fatalf("got %+v after %d hits, want id abc after 3", got, hits.Load())
	}
	if gap := second.Sub(first); gap < 40*time.Millisecond {
		t.Errorf("second attempt came %v after the first, want >= Retry-After 40ms", gap)
	}
}

func TestGivesUpAfterMaxRetries(t *testing.T) {
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		writeJSON(w, http.StatusBadGateway, map[string]any{"message": "upstream down"})
	}))
	defer srv.Close()
	_, err := newTestClient(t, srv, 2).GetLimit(context.Background(), "db")
	var apiErr *APIError
	if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusBadGateway {
		t.Fatalf("err = %v, want an APIError 502", err)
	}
	if hits.Load() != 3 {
		t.Errorf("hits = %d, want 1 + 2 retries", hits.Load())
	}
}

func TestNeverRetries4xx(t *testing.T) {
	for _, status := range []int{400, 401, 403, 404, 409, 412, 422} {
		var hits atomic.Int32
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			hits.Add(1)
			writeJSON(w, status, map[string]any{"code": status, "message": "nope"})
		}))
		_, err := newTestClient(t, srv, 5).GetLimit(context.Background(), "db")
		srv.Close()
		if err == nil {
			t.Fatalf("status %d: no error", status)
		}
		if hits.Load() != 1 {
			t.Errorf("status %d: %d attempts, want exactly 1", status, hits.Load())
		}
		if errors.Is(err, ErrNotFound) != (status == 404) || errors.Is(err, ErrConflict) != (status == 409) {
			t.Errorf("status %d: errors.Is mismatch for %v", status, err)
		}
	}
}

func TestRetriesTransportErrors(t *testing.T) {
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if hits.Add(1) == 1 {
			// Drop the connection without an answer: a transport error for the client.
			hijacker, ok := w.(http.Hijacker)
			if !ok {
				t.Error("response writer cannot hijack")
				return
			}
			if conn, _, err := hijacker.Hijack(); err == nil {
				_ = conn.Close()
			}
			return
		}
		writeJSON(w, http.StatusOK, Limit{ID: "abc", Name: "db"})
	}))
	defer srv.Close()
	got, err := newTestClient(t, srv, 2).GetLimit(context.Background(), "db")
	if err != nil || got.ID != "abc" || hits.Load() != 2 {
		t.Fatalf("got %+v, %v after %d hits; want success on the second attempt", got, err, hits.Load())
	}
}

func TestContextCancelStopsBackoff(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "30")
		writeJSON(w, http.StatusServiceUnavailable, map[string]any{"message": "busy"})
	}))
	defer srv.Close()
	c, err := New(Config{Endpoint: srv.URL, MaxRetries: 3, MaxBackoff: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = c.GetLimit(ctx, "db")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want context.DeadlineExceeded", err)
	}
	if elapsed := time.Since(start); elapsed > 5*time.Second {
		t.Errorf("cancel took %v", elapsed)
	}
}

func TestErrorMessagesCarryEnvelopeButNeverTheKey(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+testKey {
			t.Errorf("Authorization header = %q", r.Header.Get("Authorization"))
		}
		body, _ := io.ReadAll(r.Body)
		if strings.Contains(string(body), testKey) {
			t.Errorf("API key leaked into the body")
		}
		writeJSON(w, http.StatusUnprocessableEntity, map[string]any{
			"code": 422, "message": "Invalid request body.",
			"errors": map[string]any{"json": map[string]any{"name": []string{"Name must not contain any of / % & > <."}}},
		})
	}))
	defer srv.Close()
	_, err := newTestClient(t, srv, 0).CreateLimit(context.Background(), LimitSpec{Name: "a", Limit: 1})
	if err == nil {
		t.Fatal("no error")
	}
	msg := err.Error()
	for _, want := range []string{"HTTP 422", "Invalid request body.", "Name must not contain"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q lacks %q", msg, want)
		}
	}
	if strings.Contains(msg, testKey) {
		t.Errorf("error %q leaks the API key", msg)
	}
}

func TestEmptySuccessBodyIsAnErrorWhenJSONIsExpected(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
	}))
	defer srv.Close()
	c := newTestClient(t, srv, 0)
	if _, err := c.GetLimit(context.Background(), "db"); err == nil || !strings.Contains(err.Error(), "empty body") {
		t.Errorf("GetLimit on an empty 200 = %v, want an empty-body error", err)
	}
	if err := c.DeleteLimit(context.Background(), "db"); err != nil {
		t.Errorf("DeleteLimit expects no body, got %v", err)
	}
}
