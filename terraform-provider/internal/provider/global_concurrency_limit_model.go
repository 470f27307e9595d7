package provider

import (
	"context"
	"fmt"

	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/types"

	"github.com/gcl/terraform-provider-prefect/internal/client"
)

// globalConcurrencyLimitModel is shared by the resource and the data source: both expose the
// same attributes, only their schemas differ in what is settable.
type globalConcurrencyLimitModel struct {
	ID                 types.String  `tfsdk:"id"`
	Name               types.String  `tfsdk:"name"`
	Limit              types.Int64   `tfsdk:"limit"`
	Active             types.Bool    `tfsdk:"active"`
	SlotDecayPerSecond types.Float64 `tfsdk:"slot_decay_per_second"`
	ActiveSlots        types.Int64   `tfsdk:"active_slots"`
	DeniedSlots        types.Int64   `tfsdk:"denied_slots"`
	Created            types.String  `tfsdk:"created"`
	Updated            types.String  `tfsdk:"updated"`
	// Accepted so configurations written for the official provider apply unchanged; GCL has neither.
	AccountID   types.String `tfsdk:"account_id"`
	WorkspaceID types.String `tfsdk:"workspace_id"`
}

// spec returns the managed fields only: runtime counters are never sent.
func (m globalConcurrencyLimitModel) spec() client.LimitSpec {
	return client.LimitSpec{
		Name:               m.Name.ValueString(),
		Limit:              m.Limit.ValueInt64(),
		Active:             m.Active.ValueBool(),
		SlotDecayPerSecond: m.SlotDecayPerSecond.ValueFloat64(),
	}
}

// fromAPI overwrites every attribute with the server's view, so drift shows up in plans.
func (m *globalConcurrencyLimitModel) fromAPI(l *client.Limit) {
	m.ID = types.StringValue(l.ID)
	m.Name = types.StringValue(l.Name)
	m.Limit = types.Int64Value(l.Limit)
	m.Active = types.BoolValue(l.Active)
	m.SlotDecayPerSecond = types.Float64Value(l.SlotDecayPerSecond)
	m.ActiveSlots = types.Int64Value(l.ActiveSlots)
	m.DeniedSlots = types.Int64Value(l.DeniedSlots)
	m.Created = types.StringValue(l.Created)
	m.Updated = types.StringValue(l.Updated)
}

// fromAPIKeeping is fromAPI, except that a configured active_slots stays as configured (see activeSlotsKey).
func (m *globalConcurrencyLimitModel) fromAPIKeeping(l *client.Limit, keepActiveSlots bool) {
	configured := m.ActiveSlots
	m.fromAPI(l)
	if keepActiveSlots && !configured.IsUnknown() && !configured.IsNull() {
		m.ActiveSlots = configured
	}
}

// clientFrom unwraps provider data handed to Configure of a resource or data source.
func clientFrom(_ context.Context, data any) (*client.Client, diag.Diagnostics) {
	var diags diag.Diagnostics
	if data == nil {
		// The provider is not configured yet (e.g. during validation); nothing to do.
		return nil, diags
	}
	c, ok := data.(*client.Client)
	if !ok {
		diags.AddError("Unexpected provider data",
			fmt.Sprintf("Expected *client.Client, got %T. This is a bug in the provider; please report it.", data))
		return nil, diags
	}
	return c, diags
}
