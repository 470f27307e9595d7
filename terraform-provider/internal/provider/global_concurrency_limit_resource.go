package provider

import (
	"context"
	"errors"
	"fmt"
	"regexp"

	"github.com/hashicorp/terraform-plugin-framework-validators/float64validator"
	"github.com/hashicorp/terraform-plugin-framework-validators/int64validator"
	"github.com/hashicorp/terraform-plugin-framework-validators/stringvalidator"
	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/booldefault"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/float64default"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
	"github.com/hashicorp/terraform-plugin-framework/tfsdk"
	"github.com/hashicorp/terraform-plugin-framework/types"

	"github.com/gcl/terraform-provider-prefect/internal/client"
)

// nameRule mirrors the server: no / % & > < anywhere (length is checked separately).
var nameRule = regexp.MustCompile(`^[^/%&><]*$`)

var (
	_ resource.Resource                = &GlobalConcurrencyLimitResource{}
	_ resource.ResourceWithConfigure   = &GlobalConcurrencyLimitResource{}
	_ resource.ResourceWithImportState = &GlobalConcurrencyLimitResource{}
)

// GlobalConcurrencyLimitResource manages one global concurrency (or rate) limit.
type GlobalConcurrencyLimitResource struct {
	client *client.Client
}

// NewGlobalConcurrencyLimitResource is registered with the provider.
func NewGlobalConcurrencyLimitResource() resource.Resource {
	return &GlobalConcurrencyLimitResource{}
}

// Metadata sets the type name prefect_global_concurrency_limit.
func (r *GlobalConcurrencyLimitResource) Metadata(_ context.Context, req resource.MetadataRequest, resp *resource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_global_concurrency_limit"
}

// Schema: managed fields are settable; runtime counters are computed only, so they refresh
// into state without ever producing a diff on a no-op plan.
func (r *GlobalConcurrencyLimitResource) Schema(_ context.Context, _ resource.SchemaRequest, resp *resource.SchemaResponse) {
	resp.Schema = schema.Schema{
		MarkdownDescription: "A global concurrency limit: a named pool of slots shared by every process that " +
			"acquires it. With `slot_decay_per_second > 0` it acts as a rate limit. Runtime counters " +
			"(`active_slots`, `denied_slots`) are never sent: holding slots never makes a plan dirty, and " +
			"applying never resets them. Every argument of the official provider's resource is accepted " +
			"(`active_slots`, `account_id`, `workspace_id` are kept in state and otherwise ignored), so its " +
			"configurations apply unchanged. Import by id or by name.",
		Attributes: map[string]schema.Attribute{
			"id": schema.StringAttribute{
				MarkdownDescription: "Server-assigned UUID of the limit.",
				Computed:            true,
				PlanModifiers:       []planmodifier.String{stringplanmodifier.UseStateForUnknown()},
			},
			"name": schema.StringAttribute{
				MarkdownDescription: "Unique name the limit is acquired by, 1 to 255 characters, none of " +
					"`/ % & > <`. Renaming updates the limit in place (same id, held slots kept).",
				Required: true,
				Validators: []validator.String{
					stringvalidator.UTF8LengthBetween(1, 255),
					stringvalidator.RegexMatches(nameRule, "must not contain any of / % & > <"),
				},
			},
			"limit": schema.Int64Attribute{
				MarkdownDescription: "Number of slots (>= 0). `0` blocks every acquisition.",
				Required:            true,
				Validators:          []validator.Int64{int64validator.AtLeast(0)},
			},
			"active": schema.BoolAttribute{
				MarkdownDescription: "Whether the limit is enforced. An inactive limit admits everyone and " +
					"occupies nothing. Defaults to `true`.",
				Optional: true,
				Computed: true,
				Default:  booldefault.StaticBool(true),
			},
			"slot_decay_per_second": schema.Float64Attribute{
				MarkdownDescription: "Slots freed per second (>= 0). `0` (the default) makes a plain " +
					"concurrency limit; a positive rate turns it into a rate limit.",
				Optional:   true,
				Computed:   true,
				Default:    float64default.StaticFloat64(0),
				Validators: []validator.Float64{float64validator.AtLeast(0)},
			},
			"active_slots": schema.Int64Attribute{
				MarkdownDescription: "Slots occupied when last read (runtime, never sent). Accepted as an argument " +
					"for configurations written for the official provider: then state keeps the configured " +
					"value (no diff while slots are held, and an apply never resets them); read the live " +
					"count with the data source.",
				Optional:   true,
				Computed:   true,
				Validators: []validator.Int64{int64validator.AtLeast(0)},
			},
			"account_id": schema.StringAttribute{
				MarkdownDescription: "The official provider's Prefect Cloud account id: accepted and ignored " +
					"(GCL has no accounts).",
				Optional: true,
			},
			"workspace_id": schema.StringAttribute{
				MarkdownDescription: "The official provider's Prefect Cloud workspace id: accepted and ignored " +
					"(GCL has no workspaces).",
				Optional: true,
			},
			"denied_slots": schema.Int64Attribute{
				MarkdownDescription: "Recently denied slot requests when last read (runtime, read-only, never sent).",
				Computed:            true,
			},
			"created": schema.StringAttribute{
				MarkdownDescription: "Creation time (RFC 3339).",
				Computed:            true,
				PlanModifiers:       []planmodifier.String{stringplanmodifier.UseStateForUnknown()},
			},
			"updated": schema.StringAttribute{
				MarkdownDescription: "Time of the last change to the managed fields (RFC 3339).",
				Computed:            true,
			},
		},
	}
}

// Configure receives the API client built by the provider.
func (r *GlobalConcurrencyLimitResource) Configure(ctx context.Context, req resource.ConfigureRequest, resp *resource.ConfigureResponse) {
	c, diags := clientFrom(ctx, req.ProviderData)
	resp.Diagnostics.Append(diags...)
	if c != nil {
		r.client = c
	}
}

// Create posts the managed fields; a name conflict explains how to import instead.
func (r *GlobalConcurrencyLimitResource) Create(ctx context.Context, req resource.CreateRequest, resp *resource.CreateResponse) {
	var plan globalConcurrencyLimitModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	if resp.Diagnostics.HasError() {
		return
	}
	configured := activeSlotsConfigured(ctx, req.Config, &resp.Diagnostics)
	created, err := r.client.CreateLimit(ctx, plan.spec())
	if errors.Is(err, client.ErrConflict) {
		name := plan.Name.ValueString()
		resp.Diagnostics.AddAttributeError(path.Root("name"), "Global concurrency limit already exists",
			fmt.Sprintf("A limit named %q already exists on the server. To manage it with Terraform, import it:\n\n"+
				"  terraform import prefect_global_concurrency_limit.<resource name> %q\n\n"+
				"or choose another name.", name, name))
		return
	}
	if err != nil {
		resp.Diagnostics.AddError("Unable to create global concurrency limit", err.Error())
		return
	}
	plan.fromAPIKeeping(created, configured)
	if resp.Private != nil {
		resp.Diagnostics.Append(resp.Private.SetKey(ctx, activeSlotsKey, privateFlag(configured))...)
	}
	resp.Diagnostics.Append(resp.State.Set(ctx, &plan)...)
}

// Read refreshes state; a 404 drops the resource from state at once so it is re-created.
func (r *GlobalConcurrencyLimitResource) Read(ctx context.Context, req resource.ReadRequest, resp *resource.ReadResponse) {
	var state globalConcurrencyLimitModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	// After an import the id may still be a name: GET accepts both and we store the real id.
	current, err := r.client.GetLimit(ctx, state.ID.ValueString())
	if errors.Is(err, client.ErrNotFound) {
		resp.State.RemoveResource(ctx)
		return
	}
	if err != nil {
		resp.Diagnostics.AddError("Unable to read global concurrency limit", err.Error())
		return
	}
	var configured []byte
	if req.Private != nil {
		var diags diag.Diagnostics
		configured, diags = req.Private.GetKey(ctx, activeSlotsKey)
		resp.Diagnostics.Append(diags...)
	}
	state.fromAPIKeeping(current, string(configured) == "true")
	resp.Diagnostics.Append(resp.State.Set(ctx, &state)...)
}

// Update patches the managed fields only, then reads the limit back.
func (r *GlobalConcurrencyLimitResource) Update(ctx context.Context, req resource.UpdateRequest, resp *resource.UpdateResponse) {
	var plan, state globalConcurrencyLimitModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	configured := activeSlotsConfigured(ctx, req.Config, &resp.Diagnostics)
	updated, err := r.client.UpdateLimit(ctx, state.ID.ValueString(), plan.spec())
	switch {
	case errors.Is(err, client.ErrConflict):
		resp.Diagnostics.AddAttributeError(path.Root("name"), "Global concurrency limit name already taken",
			fmt.Sprintf("Cannot rename to %q: another limit already has that name. Choose another name, "+
				"or delete/import the other limit first.", plan.Name.ValueString()))
		return
	case errors.Is(err, client.ErrNotFound):
		resp.Diagnostics.AddError("Global concurrency limit disappeared",
			"The limit was deleted outside Terraform during the update. Run terraform apply again to re-create it.")
		return
	case err != nil:
		resp.Diagnostics.AddError("Unable to update global concurrency limit", err.Error())
		return
	}
	plan.fromAPIKeeping(updated, configured)
	if resp.Private != nil {
		resp.Diagnostics.Append(resp.Private.SetKey(ctx, activeSlotsKey, privateFlag(configured))...)
	}
	resp.Diagnostics.Append(resp.State.Set(ctx, &plan)...)
}

// Delete removes the limit; one that is already gone counts as deleted.
func (r *GlobalConcurrencyLimitResource) Delete(ctx context.Context, req resource.DeleteRequest, resp *resource.DeleteResponse) {
	var state globalConcurrencyLimitModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	err := r.client.DeleteLimit(ctx, state.ID.ValueString())
	if err != nil && !errors.Is(err, client.ErrNotFound) {
		resp.Diagnostics.AddError("Unable to delete global concurrency limit", err.Error())
	}
}

// ImportState accepts an id or a name; Read resolves it and stores the real id.
func (r *GlobalConcurrencyLimitResource) ImportState(ctx context.Context, req resource.ImportStateRequest, resp *resource.ImportStateResponse) {
	resource.ImportStatePassthroughID(ctx, path.Root("id"), req, resp)
}

// activeSlotsKey marks, in the resource's private state, that the configuration sets active_slots (as
// configurations written for the official provider do): state then keeps the configured value, since a
// runtime count that differs from it would be a perpetual diff.
const activeSlotsKey = "active_slots_configured"

func activeSlotsConfigured(ctx context.Context, config tfsdk.Config, diags *diag.Diagnostics) bool {
	if config.Schema == nil {
		return false // no configuration given (a bare request, as in unit tests)
	}
	var value types.Int64
	diags.Append(config.GetAttribute(ctx, path.Root("active_slots"), &value)...)
	return !value.IsNull()
}

func privateFlag(set bool) []byte {
	if set {
		return []byte("true")
	}
	return []byte("false")
}
