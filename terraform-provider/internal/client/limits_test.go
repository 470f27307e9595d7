package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
)

// fakeServer is a tiny in-memory stand-in for /api/v2/concurrency_limits.
type fakeServer struct {
	mu       sync.Mutex
	byID     map[string]*Limit
	requests []string
	bodies   []map[string]any
}

func newFakeServer(t *testing.T) (*fakeServer, *httptest.Server) {
	t.Helper()
	f := &fakeServer{byID: map[string]*Limit{}}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	return f, srv
}

func (f *fakeServer) find(idOrName string) *Limit {
	if l, ok := f.byID[idOrName]; ok {
		return l
	}
	for _, l := range f.byID {
		if l.Name == idOrName {
			return l
		}
	}
	return nil
}

func (f *fakeServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.requests = append(f.requests, r.Method+" "+r.URL.EscapedPath())
	raw, _ := io.ReadAll(r.Body)
	var body map[string]any
	var spec LimitSpec
	if len(raw) > 0 {
		_ = json.Unmarshal(raw, &body)
		_ = json.Unmarshal(raw, &spec)
	}
	f.bodies = append(f.bodies, body)
	const prefix = "/api/v2/concurrency_limits/"
	key := r.URL.Path[len(prefix):]
	switch {
	case r.Method == http.MethodPost && key == "":
		if f.find(spec.Name) != nil {
			writeJSON(w, http.StatusConflict, map[string]any{"message": "exists"})
			return
		}
		l := &Limit{ID: fmt.Sprintf("00000000-0000-4000-8000-%012d", len(f.byID)+1), Name: spec.Name,
			Limit: spec.Limit, Active: spec.Active, SlotDecayPerSecond: spec.SlotDecayPerSecond,
			Created: "t0", Updated: "t0"}
		f.byID[l.ID] = l
		writeJSON(w, http.StatusCreated, l)
	case r.Method == http.MethodGet:
		if l := f.find(key); l != nil {
			writeJSON(w, http.StatusOK, l)
			return
		}
		writeJSON(w, http.StatusNotFound, map[string]any{"message": "Concurrency limit not found."})
	case r.Method == http.MethodPatch:
		l := f.find(key)
		if l == nil {
			writeJSON(w, http.StatusNotFound, map[string]any{"message": "not found"})
			return
		}
		l.Name, l.Limit, l.Updated = spec.Name, spec.Limit, "t1"
		w.WriteHeader(http.StatusNoContent)
	case r.Method == http.MethodDelete:
		l := f.find(key)
		if l == nil {
			writeJSON(w, http.StatusNotFound, map[string]any{"message": "not found"})
			return
		}
		delete(f.byID, l.ID)
		w.WriteHeader(http.StatusNoContent)
	default:
		writeJSON(w, http.StatusMethodNotAllowed, map[string]any{"message": "no"})
	}
}

func TestLimitLifecycle(t *testing.T) {
	f, srv := newFakeServer(t)
	c := newTestClient(t, srv, 0)
	ctx := context.Background()

	created, err := c.CreateLimit(ctx, LimitSpec{Name: "db pool", Limit: 5, Active: true, SlotDecayPerSecond: 0.5})
	if err != nil {
		t.Fatalf("CreateLimit: %v", err)
	}
	if created.Name != "db pool" || created.Limit != 5 || !created.Active || created.SlotDecayPerSecond != 0.5 {
		t.Fatalf("created = %+v", created)
	}
	wantKeys := map[string]bool{"name": true, "limit": true, "active": true, "slot_decay_per_second": true}
	for k := range f.bodies[0] {
		if !wantKeys[k] {
			t.Errorf("create sent unmanaged field %q", k)
		}
	}
	if len(f.bodies[0]) != len(wantKeys) {
		t.Errorf("create body = %v, want exactly the managed fields", f.bodies[0])
	}

	if _, err := c.CreateLimit(ctx, LimitSpec{Name: "db pool", Limit: 1, Active: true}); !errors.Is(err, ErrConflict) {
		t.Errorf("duplicate create: err = %v, want ErrConflict", err)
	}

	byName, err := c.GetLimit(ctx, "db pool")
	if err != nil || byName.ID != created.ID {
		t.Fatalf("GetLimit by name = %+v, %v", byName, err)
	}

	updated, err := c.UpdateLimit(ctx, created.ID, LimitSpec{Name: "db", Limit: 7, Active: true})
	if err != nil {
		t.Fatalf("UpdateLimit: %v", err)
	}
	if updated.Name != "db" || updated.Limit != 7 || updated.Updated != "t1" {
		t.Errorf("updated = %+v", updated)
	}
	renamedByName, err := c.UpdateLimit(ctx, "db", LimitSpec{Name: "db2", Limit: 8, Active: true})
	if err != nil || renamedByName.Name != "db2" {
		t.Fatalf("UpdateLimit by old name = %+v, %v; want it read back by the new name", renamedByName, err)
	}

	if err := c.DeleteLimit(ctx, created.ID); err != nil {
		t.Fatalf("DeleteLimit: %v", err)
	}
	if _, err := c.GetLimit(ctx, created.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("GetLimit after delete: err = %v, want ErrNotFound", err)
	}
	if err := c.DeleteLimit(ctx, created.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("second DeleteLimit: err = %v, want ErrNotFound", err)
	}

	want := []string{
		"POST /api/v2/concurrency_limits/",
		"POST /api/v2/concurrency_limits/",
		"GET /api/v2/concurrency_limits/db%20pool",
		"PATCH /api/v2/concurrency_limits/" + created.ID,
		"GET /api/v2/concurrency_limits/" + created.ID,
		"PATCH /api/v2/concurrency_limits/db",
		"GET /api/v2/concurrency_limits/db2",
		"DELETE /api/v2/concurrency_limits/" + created.ID,
		"GET /api/v2/concurrency_limits/" + created.ID,
		"DELETE /api/v2/concurrency_limits/" + created.ID,
	}
	if len(f.requests) != len(want) {
		t.Fatalf("requests = %q, want %q", f.requests, want)
	}
	for i := range want {
		if f.requests[i] != want[i] {
			t.Errorf("request %d = %q, want %q", i, f.requests[i], want[i])
		}
	}
}

func TestEmptyIdentifierIsRejectedLocally(t *testing.T) {
	f, srv := newFakeServer(t)
	c := newTestClient(t, srv, 0)
	ctx := context.Background()
	if _, err := c.GetLimit(ctx, ""); err == nil {
		t.Error("GetLimit(\"\") succeeded")
	}
	if _, err := c.UpdateLimit(ctx, "", LimitSpec{Name: "x"}); err == nil {
		t.Error("UpdateLimit(\"\") succeeded")
	}
	if err := c.DeleteLimit(ctx, ""); err == nil {
		t.Error("DeleteLimit(\"\") succeeded")
	}
	if len(f.requests) != 0 {
		t.Errorf("requests sent: %q", f.requests)
	}
}

func TestLooksLikeUUID(t *testing.T) {
	for s, want := range map[string]bool{
		"5c3e2a4b-0f1d-4c2e-9a7b-1234567890ab": true,
		"5C3E2A4B-0F1D-4C2E-9A7B-1234567890AB": true,
		"5c3e2a4b-0f1d-4c2e-9a7b-1234567890ag": false,
		"5c3e2a4b0f1d4c2e9a7b1234567890ab":     false,
		"database":                             false,
	} {
		if got := looksLikeUUID(s); got != want {
			t.Errorf("looksLikeUUID(%q) = %v", s, got)
		}
	}
}
