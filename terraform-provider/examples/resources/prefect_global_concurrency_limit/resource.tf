# At most 10 concurrent database sessions across every worker.
resource "prefect_global_concurrency_limit" "database" {
  name  = "database"
  limit = 10
}

# A rate limit: 5 calls, refilled at 2 slots per second.
resource "prefect_global_concurrency_limit" "external_api" {
  name                  = "external-api"
  limit                 = 5
  slot_decay_per_second = 2
}

# Defined but not enforced for now.
resource "prefect_global_concurrency_limit" "reports" {
  name   = "reports"
  limit  = 1
  active = false
}
