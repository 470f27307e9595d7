package provider

import (
	"context"
	"fmt"
	"regexp"
	"testing"

	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
)

func dataSourceConfig(name, lookups string) string {
	return testAccConfig(accServer.endpoint, fmt.Sprintf(`
resource "prefect_global_concurrency_limit" "test" {
  name                  = %q
  limit                 = 4
  active                = false
  slot_decay_per_second = 1.5
}
%s`, name, lookups))
}

func TestAccGlobalConcurrencyLimitDataSource_byIDAndByName(t *testing.T) {
	testAccPreCheck(t)
	name := uniqueName(t, "ds")
	lookups := `
data "prefect_global_concurrency_limit" "by_id" {
  id = prefect_global_concurrency_limit.test.id
}

data "prefect_global_concurrency_limit" "by_name" {
  name = prefect_global_concurrency_limit.test.name
}
`
	var pairs []resource.TestCheckFunc
	for _, ds := range []string{"data.prefect_global_concurrency_limit.by_id", "data.prefect_global_concurrency_limit.by_name"} {
		for _, attr := range []string{"id", "name", "limit", "active", "slot_decay_per_second", "created", "updated"} {
			pairs = append(pairs, resource.TestCheckResourceAttrPair(ds, attr, limitAddr, attr))
		}
		pairs = append(pairs,
			resource.TestCheckResourceAttr(ds, "limit", "4"),
			resource.TestCheckResourceAttr(ds, "active", "false"),
			resource.TestCheckResourceAttr(ds, "slot_decay_per_second", "1.5"),
			resource.TestCheckResourceAttr(ds, "active_slots", "0"),
		)
	}
	resource.ParallelTest(t, resource.TestCase{
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		CheckDestroy:             testAccCheckDestroyed,
		Steps: []resource.TestStep{{
			Config: dataSourceConfig(name, lookups),
			Check:  resource.ComposeAggregateTestCheckFunc(pairs...),
		}},
	})
}

func TestAccGlobalConcurrencyLimitDataSource_seesHeldSlots(t *testing.T) {
	testAccPreCheck(t)
	name := uniqueName(t, "ds-held")
	c := testAccClient(t)
	limit, err := c.CreateLimit(context.Background(), clientSpec(name, 5))
	if err != nil {
		t.Fatalf("creating limit: %v", err)
	}
	t.Cleanup(func() { _ = c.DeleteLimit(context.Background(), limit.ID) })
	leaseID, err := accServer.holdSlots(context.Background(), name, 3)
	if err != nil {
		t.Fatalf("holding slots: %v", err)
	}
	t.Cleanup(func() { _ = accServer.releaseSlots(context.Background(), leaseID) })
	resource.ParallelTest(t, resource.TestCase{
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		Steps: []resource.TestStep{{
			Config: testAccConfig(accServer.endpoint, fmt.Sprintf(`
data "prefect_global_concurrency_limit" "x" {
  name = %q
}
`, name)),
			Check: resource.ComposeAggregateTestCheckFunc(
				resource.TestCheckResourceAttr("data.prefect_global_concurrency_limit.x", "id", limit.ID),
				resource.TestCheckResourceAttr("data.prefect_global_concurrency_limit.x", "active_slots", "3"),
			),
		}},
	})
}

func TestAccGlobalConcurrencyLimitDataSource_errors(t *testing.T) {
	testAccPreCheck(t)
	name := uniqueName(t, "ds-missing")
	c := testAccClient(t)
	other, err := c.CreateLimit(context.Background(), clientSpec(uniqueName(t, "ds-other"), 1))
	if err != nil {
		t.Fatalf("creating limit: %v", err)
	}
	t.Cleanup(func() { _ = c.DeleteLimit(context.Background(), other.ID) })
	cfg := func(body string) string { return testAccConfig(accServer.endpoint, body) }
	resource.ParallelTest(t, resource.TestCase{
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		Steps: []resource.TestStep{
			{
				Config:      cfg(fmt.Sprintf("data \"prefect_global_concurrency_limit\" \"x\" {\n  name = %q\n}\n", name)),
				ExpectError: regexp.MustCompile(`(?s)Global concurrency limit not found.*` + regexp.QuoteMeta(name)),
			},
			{ // an id lookup must not match a limit by its name
				Config:      cfg(fmt.Sprintf("data \"prefect_global_concurrency_limit\" \"x\" {\n  id = %q\n}\n", other.Name)),
				ExpectError: regexp.MustCompile(`Global concurrency limit not found`),
			},
			{
				Config:      cfg(fmt.Sprintf("data \"prefect_global_concurrency_limit\" \"x\" {\n  id = %q\n  name = %q\n}\n", other.ID, other.Name)),
				ExpectError: regexp.MustCompile(`Invalid Attribute Combination`),
			},
			{
				Config:      cfg("data \"prefect_global_concurrency_limit\" \"x\" {\n}\n"),
				ExpectError: regexp.MustCompile(`(?s)Missing Attribute Configuration.*Exactly one of these attributes`),
			},
		},
	})
}
