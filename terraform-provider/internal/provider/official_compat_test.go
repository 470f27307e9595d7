package provider

import (
	"context"
	"testing"

	fwdatasource "github.com/hashicorp/terraform-plugin-framework/datasource"
	fwprovider "github.com/hashicorp/terraform-plugin-framework/provider"
	fwresource "github.com/hashicorp/terraform-plugin-framework/resource"
)

func TestWithAPISuffixReadsEndpointsAsTheOfficialProvider(t *testing.T) {
	for in, want := range map[string]string{
		"http://localhost:4200":                                   "http://localhost:4200/api",
		"http://localhost:4200/":                                  "http://localhost:4200/api",
		"http://localhost:4200/api":                               "http://localhost:4200/api",
		"http://localhost:4200/api/":                              "http://localhost:4200/api",
		"https://gcl.example/prefix":                              "https://gcl.example/prefix/api",
		"https://api.prefect.cloud/api/accounts/a1/workspaces/w1": "https://api.prefect.cloud/api",
	} {
		if got := withAPISuffix(in); got != want {
			t.Errorf("withAPISuffix(%q) = %q, want %q", in, got, want)
		}
	}
}

// The arguments of the official provider block, resource and data source (PrefectHQ/terraform-provider-prefect
// docs), each of which a configuration written for it may set.
var officialArguments = map[string][]string{
	"provider":                 {"endpoint", "api_key", "basic_auth_key", "account_id", "workspace_id"},
	"resource":                 {"name", "limit", "active", "active_slots", "slot_decay_per_second", "account_id", "workspace_id"},
	"global_concurrency_limit": {"id", "name", "account_id", "workspace_id"},
	"workspace":                {"id", "handle", "account_id"},
}

func TestEveryOfficialArgumentIsAccepted(t *testing.T) {
	ctx := context.Background()
	var p fwprovider.SchemaResponse
	New("test")().Schema(ctx, fwprovider.SchemaRequest{}, &p)
	var r fwresource.SchemaResponse
	NewGlobalConcurrencyLimitResource().Schema(ctx, fwresource.SchemaRequest{}, &r)
	var d, w fwdatasource.SchemaResponse
	NewGlobalConcurrencyLimitDataSource().Schema(ctx, fwdatasource.SchemaRequest{}, &d)
	NewWorkspaceDataSource().Schema(ctx, fwdatasource.SchemaRequest{}, &w)
	settable := map[string]func(string) bool{
		"provider": func(a string) bool { at, ok := p.Schema.Attributes[a]; return ok && at.IsOptional() },
		"resource": func(a string) bool {
			at, ok := r.Schema.Attributes[a]
			return ok && (at.IsOptional() || at.IsRequired())
		},
		"global_concurrency_limit": func(a string) bool { at, ok := d.Schema.Attributes[a]; return ok && at.IsOptional() },
		"workspace":                func(a string) bool { at, ok := w.Schema.Attributes[a]; return ok && at.IsOptional() },
	}
	for kind, names := range officialArguments {
		for _, name := range names {
			if !settable[kind](name) {
				t.Errorf("%s: argument %q of the official provider cannot be set", kind, name)
			}
		}
	}
}
