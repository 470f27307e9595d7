# Look a limit up by name (or by id, exactly one of the two).
data "prefect_global_concurrency_limit" "database" {
  name = "database"
}

output "database_slots_in_use" {
  value = "${data.prefect_global_concurrency_limit.database.active_slots} of ${data.prefect_global_concurrency_limit.database.limit}"
}
