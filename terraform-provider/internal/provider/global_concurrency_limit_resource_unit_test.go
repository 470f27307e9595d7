package provider

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/tfsdk"
	"github.com/hashicorp/terraform-plugin-framework/types"
	"github.com/hashicorp/terraform-plugin-go/tftypes"

	"github.com/gcl/terraform-provider-prefect/internal/client"
)

// recorder answers every request with one canned status and body and records what it got.
type recorder struct {
	mu       sync.Mutex
	status   int
	body     string
	requests []string
	payloads []map[string]any
}

func (rec *recorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	raw, _ := io.ReadAll(r.Body)
	var payload map[string]any
	_ = json.Unmarshal(raw, &payload)
	rec.requests = append(rec.requests, r.Method+" "+r.URL.Path)
	rec.payloads = append(rec.payloads, payload)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(rec.status)
	_, _ = io.WriteString(w, rec.body)
}

func newUnitResource(t *testing.T, status int, body string) (*GlobalConcurrencyLimitResource, *recorder) {
	t.Helper()
	rec := &recorder{status: status, body: body}
	srv := httptest.NewServer(rec)
	t.Cleanup(srv.Close)
	c, err := client.New(client.Config{Endpoint: srv.URL + "/api", MaxRetries: 2, MinBackoff: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	return &GlobalConcurrencyLimitResource{client: c}, rec
}

// stateFor builds a framework state/plan value of the resource schema holding m.
func stateFor(t *testing.T, r *GlobalConcurrencyLimitResource, m globalConcurrencyLimitModel) tfsdk.State {
	t.Helper()
	ctx := context.Background()
	var schemaResp resource.SchemaResponse
	r.Schema(ctx, resource.SchemaRequest{}, &schemaResp)
	state := tfsdk.State{Schema: schemaResp.Schema, Raw: tftypes.NewValue(schemaResp.Schema.Type().TerraformType(ctx), nil)}
	if diags := state.Set(ctx, &m); diags.HasError() {
		t.Fatalf("building state: %v", diags)
	}
	return state
}

func sampleModel() globalConcurrencyLimitModel {
	return globalConcurrencyLimitModel{
		ID: types.StringValue("5c3e2a4b-0f1d-4c2e-9a7b-1234567890ab"), Name: types.StringValue("db"),
		Limit: types.Int64Value(3), Active: types.BoolValue(true), SlotDecayPerSecond: types.Float64Value(0),
		ActiveSlots: types.Int64Value(2), DeniedSlots: types.Int64Value(1),
		Created: types.StringValue("2026-11-21T10:00:00Z"), Updated: types.StringValue("2026-11-21T10:00:00Z"),
	}
}

func TestResourceReadNotFoundRemovesFromStateWithoutRetrying(t *testing.T) {
	r, rec := newUnitResource(t, http.StatusNotFound, `{"code":404,"message":"Concurrency limit not found."}`)
	state := stateFor(t, r, sampleModel())
	resp := resource.ReadResponse{State: state}
	r.Read(context.Background(), resource.ReadRequest{State: state}, &resp)
	if resp.Diagnostics.HasError() {
		t.Fatalf("diagnostics: %v", resp.Diagnostics)
	}
	if !resp.State.Raw.IsNull() {
		t.Errorf("state not removed after 404")
	}
	if len(rec.requests) != 1 {
		t.Errorf("requests = %q, want one GET and no retries", rec.requests)
	}
}

func TestResourceDeleteOfMissingLimitSucceeds(t *testing.T) {
	r, rec := newUnitResource(t, http.StatusNotFound, `{"code":404,"message":"Concurrency limit not found."}`)
	state := stateFor(t, r, sampleModel())
	resp := resource.DeleteResponse{State: state}
	r.Delete(context.Background(), resource.DeleteRequest{State: state}, &resp)
	if resp.Diagnostics.HasError() {
		t.Fatalf("delete of a missing limit failed: %v", resp.Diagnostics)
	}
	if want := "DELETE /api/v2/concurrency_limits/" + sampleModel().ID.ValueString(); len(rec.requests) != 1 || rec.requests[0] != want {
		t.Errorf("requests = %q, want [%q]", rec.requests, want)
	}
}

func TestResourceDeleteServerErrorIsReportedAfterRetries(t *testing.T) {
	r, rec := newUnitResource(t, http.StatusInternalServerError, `{"code":500,"message":"boom"}`)
	state := stateFor(t, r, sampleModel())
	resp := resource.DeleteResponse{State: state}
	r.Delete(context.Background(), resource.DeleteRequest{State: state}, &resp)
	if !resp.Diagnostics.HasError() || !strings.Contains(resp.Diagnostics.Errors()[0].Detail(), "HTTP 500") {
		t.Fatalf("diagnostics = %v, want an HTTP 500 error", resp.Diagnostics)
	}
	if len(rec.requests) != 3 {
		t.Errorf("%d requests, want 1 + 2 retries", len(rec.requests))
	}
}

func TestResourceUpdateSendsOnlyManagedFields(t *testing.T) {
	r, rec := newUnitResource(t, http.StatusNoContent, "")
	prior := sampleModel()
	planned := sampleModel()
	planned.Limit = types.Int64Value(9)
	planned.ActiveSlots, planned.DeniedSlots, planned.Updated = types.Int64Unknown(), types.Int64Unknown(), types.StringUnknown()
	plan := stateFor(t, r, planned)
	resp := resource.UpdateResponse{State: stateFor(t, r, prior)}
	r.Update(context.Background(), resource.UpdateRequest{
		Plan:  tfsdk.Plan(plan),
		State: stateFor(t, r, prior),
	}, &resp)
	// The canned 204 has no body, so the read-back GET must fail loudly rather than zero the state.
	if !resp.Diagnostics.HasError() || !strings.Contains(resp.Diagnostics.Errors()[0].Detail(), "empty body") {
		t.Errorf("diagnostics = %v, want the empty read-back reported", resp.Diagnostics)
	}
	if len(rec.requests) < 1 || rec.requests[0] != "PATCH /api/v2/concurrency_limits/"+prior.ID.ValueString() {
		t.Fatalf("requests = %q, want a PATCH by id first", rec.requests)
	}
	sent := rec.payloads[0]
	if len(sent) != 4 || sent["limit"] != float64(9) || sent["name"] != "db" || sent["active"] != true || sent["slot_decay_per_second"] != float64(0) {
		t.Errorf("PATCH body = %v, want exactly name, limit, active, slot_decay_per_second", sent)
	}
	for _, runtime := range []string{"active_slots", "denied_slots", "id", "created", "updated"} {
		if _, ok := sent[runtime]; ok {
			t.Errorf("PATCH sent %q", runtime)
		}
	}
	if len(rec.requests) != 2 || rec.requests[1] != "GET /api/v2/concurrency_limits/"+prior.ID.ValueString() {
		t.Errorf("requests = %q, want PATCH then GET", rec.requests)
	}
}
