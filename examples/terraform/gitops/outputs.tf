output "limit_ids" {
  description = "Server ids by limit name (stable across in-place updates)."
  value       = { for name, l in prefect_global_concurrency_limit.this : name => l.id }
}
