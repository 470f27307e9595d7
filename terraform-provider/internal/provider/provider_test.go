package provider

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"testing"

	"github.com/hashicorp/terraform-plugin-framework/providerserver"
	"github.com/hashicorp/terraform-plugin-framework/types"
	"github.com/hashicorp/terraform-plugin-go/tfprotov6"
	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/terraform"

	"github.com/gcl/terraform-provider-prefect/internal/client"
)

// Set by TestMain when TF_ACC=1: the live control planes the acceptance tests talk to.
var (
	accServer     *controlPlane // open server
	accAuthServer *controlPlane // server with GCL_API_KEYS=accAPIKey
)

const accAPIKey = "acc-test-key"

var testAccProtoV6ProviderFactories = map[string]func() (tfprotov6.ProviderServer, error){
	"prefect": providerserver.NewProtocol6WithError(New("test")()),
}

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	if os.Getenv("TF_ACC") == "" {
		return m.Run() // unit tests only; resource.Test skips acceptance tests itself
	}
	// Configs say source = "gcl/prefect", as users write them.
	if os.Getenv("TF_ACC_PROVIDER_NAMESPACE") == "" {
		_ = os.Setenv("TF_ACC_PROVIDER_NAMESPACE", "gcl")
	}
	if os.Getenv("TF_ACC_TERRAFORM_PATH") == "" {
		fmt.Fprintln(os.Stderr, "TF_ACC_TERRAFORM_PATH is not set: run `make -C terraform-provider testacc` "+
			"(it installs the offline terraform shim into .tools/bin)")
		return 1
	}
	dir, err := os.MkdirTemp("", "gcl-tf-acc-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	if accServer, err = startControlPlane(dir, ""); err != nil {
		fmt.Fprintln(os.Stderr, "starting control plane:", err)
		return 1
	}
	defer stopControlPlane(accServer)
	authDir, err := os.MkdirTemp(dir, "auth-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if accAuthServer, err = startControlPlane(authDir, accAPIKey); err != nil {
		fmt.Fprintln(os.Stderr, "starting control plane with API keys:", err)
		return 1
	}
	defer stopControlPlane(accAuthServer)
	return m.Run()
}

func stopControlPlane(cp *controlPlane) {
	if err := cp.stop(); err != nil {
		fmt.Fprintf(os.Stderr, "control plane at %s did not shut down cleanly: %v\n", cp.endpoint, err)
	}
}

// testAccConfig prefixes body with the provider requirements and a provider block for endpoint.
func testAccConfig(endpoint, body string) string {
	return fmt.Sprintf(`
terraform {
  required_providers {
    prefect = {
      source = "gcl/prefect"
    }
  }
}

provider "prefect" {
  endpoint = %q
}
%s`, endpoint, body)
}

// testAccPreCheck runs first in every acceptance test, before configs that name the live
// server are built: it skips like resource.Test does without TF_ACC, and fails without a server.
func testAccPreCheck(t *testing.T) {
	t.Helper()
	if os.Getenv("TF_ACC") == "" {
		t.Skip("acceptance test: set TF_ACC=1 (make -C terraform-provider testacc)")
	}
	if accServer == nil || accAuthServer == nil {
		t.Fatal("acceptance tests need the control planes started by TestMain")
	}
}

func testAccClient(t *testing.T) *client.Client {
	t.Helper()
	c, err := client.New(client.Config{Endpoint: accServer.endpoint})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// uniqueName keeps tests independent on the shared server.
func uniqueName(t *testing.T, suffix string) string {
	return fmt.Sprintf("acc-%s-%s", t.Name(), suffix)
}

// testAccCheckDestroyed verifies every limit in state is gone from the server.
func testAccCheckDestroyed(s *terraform.State) error {
	c, err := client.New(client.Config{Endpoint: accServer.endpoint})
	if err != nil {
		return err
	}
	for _, rs := range s.RootModule().Resources {
		if rs.Type != "prefect_global_concurrency_limit" {
			continue
		}
		_, err := c.GetLimit(context.Background(), rs.Primary.ID)
		if err == nil {
			return fmt.Errorf("limit %s still exists after destroy", rs.Primary.ID)
		}
		if !errors.Is(err, client.ErrNotFound) {
			return err
		}
	}
	return nil
}

func postJSON(ctx context.Context, url, body string, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewBufferString(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("POST %s: HTTP %d: %s", url, resp.StatusCode, data)
	}
	if out != nil {
		return json.Unmarshal(data, out)
	}
	return nil
}

func TestResolvePrecedence(t *testing.T) {
	t.Setenv("GCL_API_URL", "")
	t.Setenv("PREFECT_API_URL", "http://prefect/api")
	if v, from := resolve(types.StringNull(), endpointEnvVars); v != "http://prefect/api" || from != "the PREFECT_API_URL environment variable" {
		t.Errorf("empty GCL_API_URL should fall through to PREFECT_API_URL, got %q from %q", v, from)
	}
	t.Setenv("GCL_API_URL", "http://gcl/api")
	if v, _ := resolve(types.StringNull(), endpointEnvVars); v != "http://gcl/api" {
		t.Errorf("GCL_API_URL should win over PREFECT_API_URL, got %q", v)
	}
	if v, from := resolve(types.StringValue("http://cfg/api"), endpointEnvVars); v != "http://cfg/api" || from != "the provider configuration" {
		t.Errorf("configuration should win, got %q from %q", v, from)
	}
	t.Setenv("GCL_API_URL", "")
	t.Setenv("PREFECT_API_URL", "")
	if v, from := resolve(types.StringNull(), endpointEnvVars); v != "" || from != "" {
		t.Errorf("nothing set should resolve to nothing, got %q from %q", v, from)
	}
}

func TestAccProvider_endpointFromEnvironment(t *testing.T) {
	testAccPreCheck(t)
	name := uniqueName(t, "env")
	body := fmt.Sprintf(`
resource "prefect_global_concurrency_limit" "x" {
  name  = %q
  limit = 1
}
`, name)
	noEndpoint := "terraform {\n  required_providers {\n    prefect = { source = \"gcl/prefect\" }\n  }\n}\n"
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		CheckDestroy:             testAccCheckDestroyed,
		Steps: []resource.TestStep{
			{
				// PREFECT_API_URL is the fallback when GCL_API_URL is unset.
				PreConfig: func() {
					t.Setenv("GCL_API_URL", "")
					t.Setenv("PREFECT_API_URL", accServer.endpoint)
				},
				Config: noEndpoint + body,
				Check:  resource.TestCheckResourceAttr("prefect_global_concurrency_limit.x", "name", name),
			},
			{
				// GCL_API_URL wins over PREFECT_API_URL (which now points nowhere useful).
				PreConfig: func() {
					t.Setenv("GCL_API_URL", accServer.endpoint)
					t.Setenv("PREFECT_API_URL", "http://127.0.0.1:1/api")
				},
				Config: noEndpoint + body,
				Check:  resource.TestCheckResourceAttr("prefect_global_concurrency_limit.x", "limit", "1"),
			},
		},
	})
}

func TestAccProvider_badConfiguration(t *testing.T) {
	testAccPreCheck(t)
	body := `
resource "prefect_global_concurrency_limit" "x" {
  name  = "never-created"
  limit = 1
}
`
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		Steps: []resource.TestStep{
			{
				Config:      testAccConfig("ftp://127.0.0.1/api", body),
				ExpectError: regexp.MustCompile(`Invalid GCL API endpoint`),
			},
			{
				Config:      testAccConfig("", body),
				ExpectError: regexp.MustCompile(`Missing GCL API endpoint`),
			},
			{
				// The endpoint is only known after apply: the provider must say so, with a remedy.
				Config: `
terraform {
  required_providers {
    prefect = { source = "gcl/prefect" }
  }
}
resource "terraform_data" "later" {
  input = "http://127.0.0.1:1/api"
}
provider "prefect" {
  endpoint = terraform_data.later.output
}
` + body,
				ExpectError: regexp.MustCompile(`(?s)Unknown GCL API endpoint.*GCL_API_URL`),
			},
		},
	})
}

func TestAccProvider_apiKey(t *testing.T) {
	testAccPreCheck(t)
	name := uniqueName(t, "auth")
	withKey := func(key string) string {
		return fmt.Sprintf(`
terraform {
  required_providers {
    prefect = { source = "gcl/prefect" }
  }
}
provider "prefect" {
  endpoint = %q
  api_key  = %q
}
resource "prefect_global_concurrency_limit" "x" {
  name  = %q
  limit = 2
}
`, accAuthServer.endpoint, key, name)
	}
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		Steps: []resource.TestStep{
			{
				Config:      withKey("wrong-key"),
				ExpectError: regexp.MustCompile(`HTTP 401`),
			},
			{
				Config: withKey(accAPIKey),
				Check:  resource.TestCheckResourceAttr("prefect_global_concurrency_limit.x", "limit", "2"),
			},
		},
	})
}

func clientSpec(name string, limit int64) client.LimitSpec {
	return client.LimitSpec{Name: name, Limit: limit, Active: true}
}
