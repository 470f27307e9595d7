package provider

import (
	"context"
	"errors"
	"fmt"

	"github.com/hashicorp/terraform-plugin-framework-validators/datasourcevalidator"
	"github.com/hashicorp/terraform-plugin-framework/datasource"
	"github.com/hashicorp/terraform-plugin-framework/datasource/schema"
	"github.com/hashicorp/terraform-plugin-framework/path"

	"github.com/gcl/terraform-provider-prefect/internal/client"
)

var (
	_ datasource.DataSource                     = &GlobalConcurrencyLimitDataSource{}
	_ datasource.DataSourceWithConfigure        = &GlobalConcurrencyLimitDataSource{}
	_ datasource.DataSourceWithConfigValidators = &GlobalConcurrencyLimitDataSource{}
)

// GlobalConcurrencyLimitDataSource reads one limit by id or by name.
type GlobalConcurrencyLimitDataSource struct {
	client *client.Client
}

// NewGlobalConcurrencyLimitDataSource is registered with the provider.
func NewGlobalConcurrencyLimitDataSource() datasource.DataSource {
	return &GlobalConcurrencyLimitDataSource{}
}

// Metadata sets the type name prefect_global_concurrency_limit.
func (d *GlobalConcurrencyLimitDataSource) Metadata(_ context.Context, req datasource.MetadataRequest, resp *datasource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_global_concurrency_limit"
}

// Schema: exactly one of id and name is given; everything else is read.
func (d *GlobalConcurrencyLimitDataSource) Schema(_ context.Context, _ datasource.SchemaRequest, resp *datasource.SchemaResponse) {
	resp.Schema = schema.Schema{
		MarkdownDescription: "Reads an existing global concurrency limit, by `id` or by `name` (exactly one), " +
			"including its current runtime counters.",
		Attributes: map[string]schema.Attribute{
			"id": schema.StringAttribute{
				MarkdownDescription: "UUID of the limit. Conflicts with `name`.",
				Optional:            true,
				Computed:            true,
			},
			"name": schema.StringAttribute{
				MarkdownDescription: "Name of the limit. Conflicts with `id`.",
				Optional:            true,
				Computed:            true,
			},
			"limit": schema.Int64Attribute{
				MarkdownDescription: "Number of slots.",
				Computed:            true,
			},
			"active": schema.BoolAttribute{
				MarkdownDescription: "Whether the limit is enforced.",
				Computed:            true,
			},
			"slot_decay_per_second": schema.Float64Attribute{
				MarkdownDescription: "Slots freed per second; `0` for a plain concurrency limit.",
				Computed:            true,
			},
			"active_slots": schema.Int64Attribute{
				MarkdownDescription: "Slots occupied at read time.",
				Computed:            true,
			},
			"denied_slots": schema.Int64Attribute{
				MarkdownDescription: "Recently denied slot requests at read time.",
				Computed:            true,
			},
			"created": schema.StringAttribute{
				MarkdownDescription: "Creation time (RFC 3339).",
				Computed:            true,
			},
			"account_id":   ignoredDataSourceAttribute("Prefect Cloud account id"),
			"workspace_id": ignoredDataSourceAttribute("Prefect Cloud workspace id"),
			"updated": schema.StringAttribute{
				MarkdownDescription: "Time of the last change to the managed fields (RFC 3339).",
				Computed:            true,
			},
		},
	}
}

// ConfigValidators requires exactly one of id and name.
func (d *GlobalConcurrencyLimitDataSource) ConfigValidators(_ context.Context) []datasource.ConfigValidator {
	return []datasource.ConfigValidator{
		datasourcevalidator.ExactlyOneOf(path.MatchRoot("id"), path.MatchRoot("name")),
	}
}

// Configure receives the API client built by the provider.
func (d *GlobalConcurrencyLimitDataSource) Configure(ctx context.Context, req datasource.ConfigureRequest, resp *datasource.ConfigureResponse) {
	c, diags := clientFrom(ctx, req.ProviderData)
	resp.Diagnostics.Append(diags...)
	if c != nil {
		d.client = c
	}
}

// Read looks the limit up by whichever of id and name was given.
func (d *GlobalConcurrencyLimitDataSource) Read(ctx context.Context, req datasource.ReadRequest, resp *datasource.ReadResponse) {
	var cfg globalConcurrencyLimitModel
	resp.Diagnostics.Append(req.Config.Get(ctx, &cfg)...)
	if resp.Diagnostics.HasError() {
		return
	}
	key, attr := cfg.ID.ValueString(), path.Root("id")
	if cfg.ID.IsNull() {
		key, attr = cfg.Name.ValueString(), path.Root("name")
	}
	current, err := d.client.GetLimit(ctx, key)
	if err != nil && !errors.Is(err, client.ErrNotFound) {
		resp.Diagnostics.AddError("Unable to read global concurrency limit", err.Error())
		return
	}
	// GET accepts a name in place of an id and vice versa: insist the match is on the attribute given.
	if err != nil || (!cfg.ID.IsNull() && current.ID != key) || (!cfg.Name.IsNull() && current.Name != key) {
		resp.Diagnostics.AddAttributeError(attr, "Global concurrency limit not found",
			fmt.Sprintf("No limit with %s %q exists on %s.", attr.String(), key, d.client.Endpoint()))
		return
	}
	cfg.fromAPI(current)
	resp.Diagnostics.Append(resp.State.Set(ctx, &cfg)...)
}

func ignoredDataSourceAttribute(what string) schema.StringAttribute {
	return schema.StringAttribute{
		MarkdownDescription: "The " + what + " of the official provider; accepted and ignored (GCL has no " +
			"accounts or workspaces).",
		Optional: true,
	}
}
