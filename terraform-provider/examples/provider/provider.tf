terraform {
  required_providers {
    prefect = {
      source = "gcl/prefect"
    }
  }
}

# Point the provider at a GCL control plane ("/api" is appended when missing). Both attributes may come from
# the environment instead: GCL_API_URL (or PREFECT_API_URL) and GCL_API_KEY (or PREFECT_API_KEY).
provider "prefect" {
  endpoint = "http://127.0.0.1:4280"
  # api_key = var.gcl_api_key # only when the server is started with GCL_API_KEYS
}
