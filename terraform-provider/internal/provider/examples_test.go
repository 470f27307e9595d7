package provider

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/knownvalue"
	"github.com/hashicorp/terraform-plugin-testing/statecheck"
)

func readExample(t *testing.T, parts ...string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(append([]string{"..", "..", "examples"}, parts...)...))
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// TestAccExamples applies the examples that the generated docs show, so they cannot rot.
func TestAccExamples(t *testing.T) {
	testAccPreCheck(t)
	resources := readExample(t, "resources", "prefect_global_concurrency_limit", "resource.tf")
	dataSource := readExample(t, "data-sources", "prefect_global_concurrency_limit", "data-source.tf")
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		CheckDestroy:             testAccCheckDestroyed,
		Steps: []resource.TestStep{
			{
				Config: testAccConfig(accServer.endpoint, resources),
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttr("prefect_global_concurrency_limit.database", "limit", "10"),
					resource.TestCheckResourceAttr("prefect_global_concurrency_limit.external_api", "slot_decay_per_second", "2"),
					resource.TestCheckResourceAttr("prefect_global_concurrency_limit.reports", "active", "false"),
				),
			},
			{ // the data source example reads the limit the resource example made
				Config: testAccConfig(accServer.endpoint, resources+dataSource),
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownOutputValue("database_slots_in_use", knownvalue.StringExact("0 of 10")),
				},
			},
		},
	})
}
