# Import by name (GCL accepts a name wherever an id is expected)...
terraform import prefect_global_concurrency_limit.database database

# ...or by id.
terraform import prefect_global_concurrency_limit.database 5c3e2a4b-0f1d-4c2e-9a7b-1234567890ab
