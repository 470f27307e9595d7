"""What the fault suites (tests/faults, tests/pgfaults) share: SDK client processes and the checks on their records."""
