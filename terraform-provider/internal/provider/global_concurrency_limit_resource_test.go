package provider

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"testing"

	"github.com/hashicorp/terraform-plugin-testing/compare"
	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/knownvalue"
	"github.com/hashicorp/terraform-plugin-testing/plancheck"
	"github.com/hashicorp/terraform-plugin-testing/statecheck"
	"github.com/hashicorp/terraform-plugin-testing/terraform"
	"github.com/hashicorp/terraform-plugin-testing/tfjsonpath"

	"github.com/gcl/terraform-provider-prefect/internal/client"
)

const limitAddr = "prefect_global_concurrency_limit.test"

// limitConfig renders one resource; decay and active are left out when nil (server defaults).
func limitConfig(name string, limit int, active *bool, decay *float64) string {
	body := fmt.Sprintf("resource \"prefect_global_concurrency_limit\" \"test\" {\n  name  = %q\n  limit = %d\n", name, limit)
	if active != nil {
		body += fmt.Sprintf("  active = %t\n", *active)
	}
	if decay != nil {
		body += fmt.Sprintf("  slot_decay_per_second = %g\n", *decay)
	}
	return testAccConfig(accServer.endpoint, body+"}\n")
}

func ptr[T any](v T) *T { return &v }

// checkServer asserts what the control plane itself holds, not just Terraform state.
func checkServer(t *testing.T, name string, want func(*client.Limit) error) resource.TestCheckFunc {
	return func(*terraform.State) error {
		got, err := testAccClient(t).GetLimit(context.Background(), name)
		if err != nil {
			return err
		}
		return want(got)
	}
}

func TestAccGlobalConcurrencyLimit_lifecycle(t *testing.T) {
	testAccPreCheck(t)
	name := uniqueName(t, "db")
	renamed := name + "-renamed"
	sameID := statecheck.CompareValue(compare.ValuesSame())
	resource.ParallelTest(t, resource.TestCase{
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		CheckDestroy:             testAccCheckDestroyed,
		Steps: []resource.TestStep{
			{ // create with defaults
				Config: limitConfig(name, 5, nil, nil),
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttr(limitAddr, "name", name),
					resource.TestCheckResourceAttr(limitAddr, "limit", "5"),
					resource.TestCheckResourceAttr(limitAddr, "active", "true"),
					resource.TestCheckResourceAttr(limitAddr, "slot_decay_per_second", "0"),
					resource.TestCheckResourceAttr(limitAddr, "active_slots", "0"),
					resource.TestCheckResourceAttr(limitAddr, "denied_slots", "0"),
					resource.TestMatchResourceAttr(limitAddr, "id", regexp.MustCompile(`^[0-9a-f-]{36}$`)),
					resource.TestMatchResourceAttr(limitAddr, "created", regexp.MustCompile(`^\d{4}-\d\d-\d\dT`)),
					resource.TestCheckResourceAttrSet(limitAddr, "updated"),
					checkServer(t, name, func(l *client.Limit) error {
						if l.Limit != 5 || !l.Active || l.SlotDecayPerSecond != 0 {
							return fmt.Errorf("server holds %+v", l)
						}
						return nil
					}),
				),
				ConfigStateChecks: []statecheck.StateCheck{sameID.AddStateValue(limitAddr, tfjsonpath.New("id"))},
			},
			{ // import by id
				ResourceName:      limitAddr,
				ImportState:       true,
				ImportStateVerify: true,
			},
			{ // import by name
				ResourceName:      limitAddr,
				ImportState:       true,
				ImportStateId:     name,
				ImportStateVerify: true,
			},
			{ // update limit and decay in place
				Config: limitConfig(name, 7, nil, ptr(0.1)),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction(limitAddr, plancheck.ResourceActionUpdate),
					plancheck.ExpectKnownValue(limitAddr, tfjsonpath.New("id"), knownvalue.NotNull()),
					plancheck.ExpectKnownValue(limitAddr, tfjsonpath.New("created"), knownvalue.NotNull()),
				}},
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttr(limitAddr, "limit", "7"),
					resource.TestCheckResourceAttr(limitAddr, "slot_decay_per_second", "0.1"),
				),
				ConfigStateChecks: []statecheck.StateCheck{sameID.AddStateValue(limitAddr, tfjsonpath.New("id"))},
			},
			{ // rename in place: same id, old name gone
				Config: limitConfig(renamed, 7, nil, ptr(0.1)),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction(limitAddr, plancheck.ResourceActionUpdate),
				}},
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttr(limitAddr, "name", renamed),
					checkServer(t, renamed, func(l *client.Limit) error {
						if l.Limit != 7 || l.SlotDecayPerSecond != 0.1 {
							return fmt.Errorf("server holds %+v", l)
						}
						return nil
					}),
				),
				ConfigStateChecks: []statecheck.StateCheck{sameID.AddStateValue(limitAddr, tfjsonpath.New("id"))},
			},
			{ // deactivate, then a plan with the same config must be empty
				Config: limitConfig(renamed, 7, ptr(false), ptr(0.1)),
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttr(limitAddr, "active", "false"),
					checkServer(t, renamed, func(l *client.Limit) error {
						if l.Active {
							return fmt.Errorf("server still active: %+v", l)
						}
						return nil
					}),
				),
			},
			{ // removing `active` goes back to the default (true)
				Config: limitConfig(renamed, 7, nil, ptr(0.1)),
				Check:  resource.TestCheckResourceAttr(limitAddr, "active", "true"),
				ConfigStateChecks: []statecheck.StateCheck{
					sameID.AddStateValue(limitAddr, tfjsonpath.New("id")),
				},
			},
		},
	})
}

func TestAccGlobalConcurrencyLimit_outOfBandChangeIsRestored(t *testing.T) {
	testAccPreCheck(t)
	name := uniqueName(t, "drift")
	resource.ParallelTest(t, resource.TestCase{
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		CheckDestroy:             testAccCheckDestroyed,
		Steps: []resource.TestStep{
			{Config: limitConfig(name, 5, nil, nil)},
			{
				PreConfig: func() {
					_, err := testAccClient(t).UpdateLimit(context.Background(), name,
						client.LimitSpec{Name: name, Limit: 99, Active: false, SlotDecayPerSecond: 2})
					if err != nil {
						t.Fatalf("out-of-band PATCH: %v", err)
					}
				},
				Config: limitConfig(name, 5, nil, nil),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectNonEmptyPlan(),
					plancheck.ExpectResourceAction(limitAddr, plancheck.ResourceActionUpdate),
					plancheck.ExpectKnownValue(limitAddr, tfjsonpath.New("limit"), knownvalue.Int64Exact(5)),
					plancheck.ExpectKnownValue(limitAddr, tfjsonpath.New("active"), knownvalue.Bool(true)),
					plancheck.ExpectKnownValue(limitAddr, tfjsonpath.New("slot_decay_per_second"), knownvalue.Float64Exact(0)),
				}},
				Check: checkServer(t, name, func(l *client.Limit) error {
					if l.Limit != 5 || !l.Active || l.SlotDecayPerSecond != 0 {
						return fmt.Errorf("config not restored on the server: %+v", l)
					}
					return nil
				}),
			},
		},
	})
}

func TestAccGlobalConcurrencyLimit_outOfBandDeleteIsRecreated(t *testing.T) {
	testAccPreCheck(t)
	name := uniqueName(t, "gone")
	newID := statecheck.CompareValue(compare.ValuesDiffer())
	resource.ParallelTest(t, resource.TestCase{
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		CheckDestroy:             testAccCheckDestroyed,
		Steps: []resource.TestStep{
			{
				Config:            limitConfig(name, 3, nil, nil),
				ConfigStateChecks: []statecheck.StateCheck{newID.AddStateValue(limitAddr, tfjsonpath.New("id"))},
			},
			{
				PreConfig: func() {
					if err := testAccClient(t).DeleteLimit(context.Background(), name); err != nil {
						t.Fatalf("out-of-band DELETE: %v", err)
					}
				},
				Config: limitConfig(name, 3, nil, nil),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction(limitAddr, plancheck.ResourceActionCreate),
				}},
				ConfigStateChecks: []statecheck.StateCheck{newID.AddStateValue(limitAddr, tfjsonpath.New("id"))},
			},
		},
	})
}

func TestAccGlobalConcurrencyLimit_heldSlotsNeverCauseADiff(t *testing.T) {
	testAccPreCheck(t)
	name := uniqueName(t, "held")
	var leaseID string
	t.Cleanup(func() {
		if leaseID != "" {
			_ = accServer.releaseSlots(context.Background(), leaseID)
		}
	})
	resource.ParallelTest(t, resource.TestCase{
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		CheckDestroy:             testAccCheckDestroyed,
		Steps: []resource.TestStep{
			{Config: limitConfig(name, 3, nil, nil)},
			{ // a client holds 2 slots: refresh sees them, the plan stays empty
				PreConfig: func() {
					var err error
					if leaseID, err = accServer.holdSlots(context.Background(), name, 2); err != nil {
						t.Fatalf("holding slots: %v", err)
					}
				},
				Config: limitConfig(name, 3, nil, nil),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectEmptyPlan(),
				}},
				Check: resource.TestCheckResourceAttr(limitAddr, "active_slots", "2"),
			},
			{ // plan only, still empty while held
				Config:   limitConfig(name, 3, nil, nil),
				PlanOnly: true,
			},
			{ // an update while slots are held never resets them
				Config: limitConfig(name, 4, nil, nil),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction(limitAddr, plancheck.ResourceActionUpdate),
				}},
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttr(limitAddr, "limit", "4"),
					resource.TestCheckResourceAttr(limitAddr, "active_slots", "2"),
					checkServer(t, name, func(l *client.Limit) error {
						if l.ActiveSlots != 2 {
							return fmt.Errorf("held slots changed by apply: %+v", l)
						}
						return nil
					}),
				),
			},
		},
	})
}

func TestAccGlobalConcurrencyLimit_nameConflictExplainsImport(t *testing.T) {
	testAccPreCheck(t)
	name := uniqueName(t, "taken")
	c := testAccClient(t)
	if _, err := c.CreateLimit(context.Background(), client.LimitSpec{Name: name, Limit: 1, Active: true}); err != nil {
		t.Fatalf("creating the pre-existing limit: %v", err)
	}
	t.Cleanup(func() { _ = c.DeleteLimit(context.Background(), name) })
	resource.ParallelTest(t, resource.TestCase{
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		CheckDestroy:             testAccCheckDestroyed,
		Steps: []resource.TestStep{
			{
				Config: limitConfig(name, 2, nil, nil),
				ExpectError: regexp.MustCompile(`(?s)already exists.*terraform import\s+prefect_global_concurrency_limit\.<resource\s+name>\s+"` +
					regexp.QuoteMeta(name) + `"`),
			},
			{Config: limitConfig(name+"-mine", 2, nil, nil)},
			{ // renaming onto the taken name is a 409 too, with its own message; state keeps the old name
				Config:      limitConfig(name, 2, nil, nil),
				ExpectError: regexp.MustCompile(`(?s)name already taken.*another\s+limit\s+already\s+has\s+that\s+name`),
			},
			{
				Config:   limitConfig(name+"-mine", 2, nil, nil),
				PlanOnly: true,
			},
		},
	})
}

func TestAccGlobalConcurrencyLimit_invalidValuesFailAtPlan(t *testing.T) {
	testAccPreCheck(t)
	step := func(name string, limit int, decay *float64, want string) resource.TestStep {
		return resource.TestStep{
			Config:      limitConfig(name, limit, nil, decay),
			PlanOnly:    true,
			ExpectError: regexp.MustCompile(want),
		}
	}
	resource.ParallelTest(t, resource.TestCase{
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		Steps: []resource.TestStep{
			step("a/b", 1, nil, `must not contain any of / % & > <`),
			step("50%", 1, nil, `must not contain any of / % & > <`),
			step("a&b", 1, nil, `must not contain any of / % & > <`),
			step("<tag>", 1, nil, `must not contain any of / % & > <`),
			step("", 1, nil, `UTF-8 character count must be between 1 and 255, got: 0`),
			step(strings.Repeat("é", 256), 1, nil, `UTF-8 character count must be between 1 and 255, got: 256`),
			step("ok", -1, nil, `value must be at least 0`),
			step("ok", 1, ptr(-0.5), `value must be at least 0`),
			{ // 255 characters (510 bytes) is still a valid name, as on the server
				Config:             limitConfig(strings.Repeat("é", 255), 0, nil, nil),
				PlanOnly:           true,
				ExpectNonEmptyPlan: true,
			},
		},
	})
}
