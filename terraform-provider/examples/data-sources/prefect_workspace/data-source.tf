# Configurations written for the official provider look a workspace up; on GCL it is the one implicit workspace.
data "prefect_workspace" "current" {
  handle = "my-workspace"
}

resource "prefect_global_concurrency_limit" "database" {
  workspace_id = data.prefect_workspace.current.id # accepted and ignored
  name         = "database-in-workspace"
  limit        = 10
}
