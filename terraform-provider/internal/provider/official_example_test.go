package provider

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/plancheck"
	"github.com/hashicorp/terraform-plugin-testing/terraform"

	"github.com/gcl/terraform-provider-prefect/internal/client"
)

// officialExample is the example of PrefectHQ/terraform-provider-prefect's docs for
// prefect_global_concurrency_limit, byte for byte (testdata/official_example.tf), under our source address.
func officialExample(t *testing.T, replace ...string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", "official_example.tf"))
	if err != nil {
		t.Fatal(err)
	}
	body := strings.NewReplacer(replace...).Replace(string(data))
	return "terraform {\n  required_providers {\n    prefect = { source = \"gcl/prefect\" }\n  }\n}\n\n" + body
}

// TestAccOfficialExampleAppliesUnchanged: the official example, configured as its users configure it (the
// endpoint from PREFECT_API_URL, without /api), applies unchanged; then, as a plain concurrency limit with
// its `active_slots = 0`, a held slot causes no diff, and an apply that changes the limit keeps the slot.
func TestAccOfficialExampleAppliesUnchanged(t *testing.T) {
	testAccPreCheck(t)
	t.Setenv("PREFECT_API_URL", strings.TrimSuffix(accServer.endpoint, "/api"))
	t.Setenv("GCL_API_URL", "")
	const name, addr = "test-global-concurrency-limit", "prefect_global_concurrency_limit.test"
	const decay15, decay0 = "slot_decay_per_second = 1.5", "slot_decay_per_second = 0"
	const limit1, limit2 = "limit                 = 1", "limit                 = 2"
	var leaseID string
	t.Cleanup(func() {
		if leaseID != "" {
			_ = accServer.releaseSlots(context.Background(), leaseID)
		}
	})
	held := func(want int64) resource.TestCheckFunc {
		return checkServer(t, name, func(l *client.Limit) error {
			if l.ActiveSlots != want {
				return fmt.Errorf("the server holds %d slots, want %d: %+v", l.ActiveSlots, want, l)
			}
			return nil
		})
	}
	// No apply ended the lease: its renewal succeeds (a revoked lease answers 410).
	leaseLives := func(*terraform.State) error {
		url := fmt.Sprintf("%s/v2/concurrency_limits/leases/%s/renew", accServer.endpoint, leaseID)
		return postJSON(context.Background(), url, `{"lease_duration": 300}`, nil)
	}
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		CheckDestroy:             testAccCheckDestroyed,
		Steps: []resource.TestStep{
			{
				Config: officialExample(t),
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttr(addr, "limit", "1"),
					resource.TestCheckResourceAttr(addr, "slot_decay_per_second", "1.5"),
					resource.TestCheckResourceAttr(addr, "active_slots", "0"),
					resource.TestCheckResourceAttr(addr, "workspace_id", ImplicitWorkspaceID),
					resource.TestCheckResourceAttr("data.prefect_workspace.test", "handle", "my-workspace"),
				),
			},
			{ // the same as a plain concurrency limit (no decay), so a held slot stays held
				Config: officialExample(t, decay15, decay0),
				Check:  resource.TestCheckResourceAttr(addr, "slot_decay_per_second", "0"),
			},
			{ // a holder takes the slot: the official provider would now plan active_slots 1 -> 0 at every apply
				PreConfig: func() {
					var err error
					if leaseID, err = accServer.holdSlots(context.Background(), name, 1); err != nil {
						t.Fatalf("holding a slot: %v", err)
					}
				},
				Config:   officialExample(t, decay15, decay0),
				PlanOnly: true,
			},
			{ // raising the limit while the slot is held: an in-place update that ends no lease
				Config: officialExample(t, decay15, decay0, limit1, limit2),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction(addr, plancheck.ResourceActionUpdate),
				}},
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttr(addr, "limit", "2"),
					resource.TestCheckResourceAttr(addr, "active_slots", "0"),
					held(1),
					leaseLives,
				),
			},
			{Config: officialExample(t, decay15, decay0, limit1, limit2), PlanOnly: true},
			{ // import by id, as the official provider's docs show
				ResourceName:            addr,
				ImportState:             true,
				ImportStateVerify:       true,
				ImportStateVerifyIgnore: []string{"active_slots", "workspace_id", "denied_slots", "updated"},
			},
		},
	})
}

// TestAccWorkspaceExample applies the prefect_workspace example its generated docs show.
func TestAccWorkspaceExample(t *testing.T) {
	testAccPreCheck(t)
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		CheckDestroy:             testAccCheckDestroyed,
		Steps: []resource.TestStep{{
			Config: testAccConfig(accServer.endpoint, readExample(t, "data-sources", "prefect_workspace", "data-source.tf")),
			Check: resource.ComposeAggregateTestCheckFunc(
				resource.TestCheckResourceAttr("data.prefect_workspace.current", "id", ImplicitWorkspaceID),
				resource.TestCheckResourceAttr("data.prefect_workspace.current", "name", "my-workspace"),
				resource.TestCheckResourceAttr("prefect_global_concurrency_limit.database", "workspace_id", ImplicitWorkspaceID),
			),
		}},
	})
}
