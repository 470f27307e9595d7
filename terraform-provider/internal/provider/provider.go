// Package provider maps Terraform configuration and state onto the GCL API client.
package provider

import (
	"context"
	"os"
	"strings"
	"time"

	"github.com/hashicorp/terraform-plugin-framework/datasource"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/provider"
	"github.com/hashicorp/terraform-plugin-framework/provider/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/types"
	"github.com/hashicorp/terraform-plugin-log/tflog"

	"github.com/gcl/terraform-provider-prefect/internal/client"
)

// Address is the provider's source address: the project's own namespace, type "prefect", so resources keep
// the names of the official provider's (prefecthq/prefect) and a configuration switches by its source line.
const Address = "registry.terraform.io/gcl/prefect"

// Environment variables read when the configuration leaves an attribute out, first match wins.
var (
	endpointEnvVars = []string{"GCL_API_URL", "PREFECT_API_URL"}
	apiKeyEnvVars   = []string{"GCL_API_KEY", "PREFECT_API_KEY"}
)

var _ provider.Provider = &PrefectProvider{}

// PrefectProvider is the "prefect" provider backed by a GCL control plane.
type PrefectProvider struct {
	version string
}

// PrefectProviderModel is the provider block.
type PrefectProviderModel struct {
	Endpoint     types.String `tfsdk:"endpoint"`
	APIKey       types.String `tfsdk:"api_key"`
	BasicAuthKey types.String `tfsdk:"basic_auth_key"`
	AccountID    types.String `tfsdk:"account_id"`
	WorkspaceID  types.String `tfsdk:"workspace_id"`
}

// New returns a constructor for the provider, as providerserver expects.
func New(version string) func() provider.Provider {
	return func() provider.Provider {
		return &PrefectProvider{version: version}
	}
}

// Metadata sets the type name ("prefect") and version.
func (p *PrefectProvider) Metadata(_ context.Context, _ provider.MetadataRequest, resp *provider.MetadataResponse) {
	resp.TypeName = "prefect"
	resp.Version = p.version
}

// Schema describes the provider block.
func (p *PrefectProvider) Schema(_ context.Context, _ provider.SchemaRequest, resp *provider.SchemaResponse) {
	resp.Schema = schema.Schema{
		MarkdownDescription: "Manages global concurrency limits and rate limits on a **GCL** control plane, " +
			"which speaks Prefect's `/api/v2/concurrency_limits` API. Its type is `prefect` and its source " +
			"address `gcl/prefect`: a configuration written for the official provider (`prefecthq/prefect`) " +
			"switches by its `source` line alone, since every argument of the official provider block and of " +
			"`prefect_global_concurrency_limit` is accepted.",
		Attributes: map[string]schema.Attribute{
			"endpoint": schema.StringAttribute{
				MarkdownDescription: "Base URL of the control plane API. `/api` is appended when missing " +
					"(as the official provider does: `http://host:4280` and `http://host:4280/api` are the same). " +
					"Falls back to the `GCL_API_URL` then `PREFECT_API_URL` environment variables, then to `" +
					client.DefaultEndpoint + "`.",
				Optional: true,
			},
			"api_key": schema.StringAttribute{
				MarkdownDescription: "API key sent as `Authorization: Bearer <key>`; only needed when the server " +
					"is configured with API keys. Falls back to the `GCL_API_KEY` then `PREFECT_API_KEY` " +
					"environment variables.",
				Optional:  true,
				Sensitive: true,
			},
			"basic_auth_key": schema.StringAttribute{
				MarkdownDescription: "The official provider's basic-auth key for a Prefect server: accepted and " +
					"ignored (GCL authenticates with `api_key` only). Not read from the environment.",
				Optional:  true,
				Sensitive: true,
			},
			"account_id": schema.StringAttribute{
				MarkdownDescription: "The official provider's default Prefect Cloud account id: accepted and ignored " +
					"(GCL has no accounts).",
				Optional: true,
			},
			"workspace_id": schema.StringAttribute{
				MarkdownDescription: "The official provider's default Prefect Cloud workspace id: accepted and " +
					"ignored (GCL has no workspaces).",
				Optional: true,
			},
		},
	}
}

// Configure resolves endpoint and key (config > environment > default) and builds the client.
func (p *PrefectProvider) Configure(ctx context.Context, req provider.ConfigureRequest, resp *provider.ConfigureResponse) {
	var cfg PrefectProviderModel
	resp.Diagnostics.Append(req.Config.Get(ctx, &cfg)...)
	if resp.Diagnostics.HasError() {
		return
	}
	if cfg.Endpoint.IsUnknown() {
		resp.Diagnostics.AddAttributeError(path.Root("endpoint"), "Unknown GCL API endpoint",
			"The provider cannot create the API client because the endpoint is not known until apply. "+
				"Set it to a static value, or leave it out and use the GCL_API_URL environment variable.")
	}
	if cfg.APIKey.IsUnknown() {
		resp.Diagnostics.AddAttributeError(path.Root("api_key"), "Unknown GCL API key",
			"The provider cannot create the API client because the API key is not known until apply. "+
				"Set it to a static value, or leave it out and use the GCL_API_KEY environment variable.")
	}
	if resp.Diagnostics.HasError() {
		return
	}

	endpoint, endpointFrom := resolve(cfg.Endpoint, endpointEnvVars)
	if endpointFrom == "" {
		endpoint, endpointFrom = client.DefaultEndpoint, "default"
	}
	if strings.TrimSpace(endpoint) == "" {
		resp.Diagnostics.AddAttributeError(path.Root("endpoint"), "Missing GCL API endpoint",
			"The endpoint set by "+endpointFrom+" is empty. Set it to the control plane URL, "+
				"e.g. "+client.DefaultEndpoint+", or remove it to use the default.")
		return
	}
	apiKey, apiKeyFrom := resolve(cfg.APIKey, apiKeyEnvVars)
	if apiKeyFrom != "" && apiKey == "" {
		resp.Diagnostics.AddAttributeError(path.Root("api_key"), "Missing GCL API key",
			"The API key set by "+apiKeyFrom+" is empty. Set a key, or remove it when the server needs none.")
		return
	}

	c, err := client.New(client.Config{
		Endpoint:   withAPISuffix(endpoint),
		APIKey:     apiKey,
		UserAgent:  "terraform-provider-prefect-gcl/" + p.version,
		MaxRetries: 4,
		MinBackoff: 250 * time.Millisecond,
		MaxBackoff: 10 * time.Second,
	})
	if err != nil {
		resp.Diagnostics.AddAttributeError(path.Root("endpoint"), "Invalid GCL API endpoint",
			"The endpoint set by "+endpointFrom+" is not usable: "+err.Error()+
				". Use an http(s) URL such as "+client.DefaultEndpoint+".")
		return
	}
	// The key itself is never logged, only whether one is in use.
	tflog.Debug(ctx, "configured GCL API client", map[string]any{
		"endpoint": c.Endpoint(), "endpoint_from": endpointFrom, "api_key_set": apiKey != "",
	})
	resp.DataSourceData = c
	resp.ResourceData = c
}

// resolve returns the configured value, else the first non-empty environment variable, and where
// it came from ("" when nothing set it).
func resolve(configured types.String, envVars []string) (string, string) {
	if !configured.IsNull() {
		return configured.ValueString(), "the provider configuration"
	}
	for _, name := range envVars {
		// An empty variable counts as unset, as in most shells' `VAR= cmd` idiom.
		if v := os.Getenv(name); v != "" {
			return v, "the " + name + " environment variable"
		}
	}
	return "", ""
}

// Resources lists the managed resource types.
func (p *PrefectProvider) Resources(_ context.Context) []func() resource.Resource {
	return []func() resource.Resource{NewGlobalConcurrencyLimitResource}
}

// DataSources lists the data source types.
func (p *PrefectProvider) DataSources(_ context.Context) []func() datasource.DataSource {
	return []func() datasource.DataSource{NewGlobalConcurrencyLimitDataSource, NewWorkspaceDataSource}
}

// withAPISuffix reads an endpoint as the official provider does: `/api` is appended when missing, and a
// Prefect Cloud URL's `/api/accounts/<id>/workspaces/<id>` path is cut back to `/api`.
func withAPISuffix(endpoint string) string {
	trimmed := strings.TrimRight(strings.TrimSpace(endpoint), "/")
	if i := strings.Index(trimmed, "/api/accounts/"); i >= 0 {
		return trimmed[:i] + "/api"
	}
	if strings.HasSuffix(trimmed, "/api") {
		return trimmed
	}
	return trimmed + "/api"
}
