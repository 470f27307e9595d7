# GitOps-style limits: the whole set lives in terraform.tfvars, reviewed and applied from a repo.
terraform {
  required_version = ">= 1.5"
  required_providers {
    prefect = {
      source = "gcl/prefect"
    }
  }
}

provider "prefect" {
  endpoint = var.endpoint
  api_key  = var.api_key
}

resource "prefect_global_concurrency_limit" "this" {
  for_each = var.limits

  name                  = each.key
  limit                 = each.value.limit
  active                = each.value.active
  slot_decay_per_second = each.value.slot_decay_per_second
}
