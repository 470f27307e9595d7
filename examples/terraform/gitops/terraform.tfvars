limits = {
  "database" = {
    limit = 10
  }
  "external-api" = {
    limit                 = 5
    slot_decay_per_second = 2
  }
  "nightly-reports" = {
    limit  = 1
    active = false
  }
}
