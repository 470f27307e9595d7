"""What Prefect's own clients ask of a Prefect server besides the limits: version, CSRF token, events socket."""
