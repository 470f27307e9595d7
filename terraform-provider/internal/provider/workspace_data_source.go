package provider

import (
	"context"

	"github.com/hashicorp/terraform-plugin-framework/datasource"
	"github.com/hashicorp/terraform-plugin-framework/datasource/schema"
	"github.com/hashicorp/terraform-plugin-framework/types"
)

// ImplicitWorkspaceID stands for the one workspace a GCL server is (the official provider's nil UUID).
const ImplicitWorkspaceID = "00000000-0000-0000-0000-000000000000"

var _ datasource.DataSource = &WorkspaceDataSource{}

// WorkspaceDataSource answers lookups of a Prefect Cloud workspace, which GCL does not have.
type WorkspaceDataSource struct{}

type workspaceModel struct {
	ID        types.String `tfsdk:"id"`
	Handle    types.String `tfsdk:"handle"`
	Name      types.String `tfsdk:"name"`
	AccountID types.String `tfsdk:"account_id"`
}

// NewWorkspaceDataSource is registered with the provider.
func NewWorkspaceDataSource() datasource.DataSource {
	return &WorkspaceDataSource{}
}

// Metadata sets the type name prefect_workspace.
func (d *WorkspaceDataSource) Metadata(_ context.Context, req datasource.MetadataRequest, resp *datasource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_workspace"
}

// Schema takes the official data source's lookup arguments.
func (d *WorkspaceDataSource) Schema(_ context.Context, _ datasource.SchemaRequest, resp *datasource.SchemaResponse) {
	resp.Schema = schema.Schema{
		MarkdownDescription: "GCL has no workspaces: this data source stands for the one implicit workspace a GCL " +
			"server is, so configurations written for the official provider that look a workspace up (its " +
			"examples pass `data.prefect_workspace.<name>.id` as `workspace_id`) apply unchanged. It makes no " +
			"request.",
		Attributes: map[string]schema.Attribute{
			"id": schema.StringAttribute{
				MarkdownDescription: "The id given, else `" + ImplicitWorkspaceID + "`.",
				Optional:            true,
				Computed:            true,
			},
			"handle": schema.StringAttribute{
				MarkdownDescription: "The handle given, else `default`.",
				Optional:            true,
				Computed:            true,
			},
			"name": schema.StringAttribute{
				MarkdownDescription: "The handle.",
				Computed:            true,
			},
			"account_id": schema.StringAttribute{
				MarkdownDescription: "Accepted and ignored (GCL has no accounts).",
				Optional:            true,
			},
		},
	}
}

// Read fills in the implicit workspace.
func (d *WorkspaceDataSource) Read(ctx context.Context, req datasource.ReadRequest, resp *datasource.ReadResponse) {
	var cfg workspaceModel
	resp.Diagnostics.Append(req.Config.Get(ctx, &cfg)...)
	if resp.Diagnostics.HasError() {
		return
	}
	if cfg.ID.IsNull() {
		cfg.ID = types.StringValue(ImplicitWorkspaceID)
	}
	if cfg.Handle.IsNull() {
		cfg.Handle = types.StringValue("default")
	}
	cfg.Name = cfg.Handle
	resp.Diagnostics.Append(resp.State.Set(ctx, &cfg)...)
}
