"""Transactional domain logic (limits, the slot engine, its queue and its wake-ups). No Flask here.

The engine reads top-down: slots (acquire) > waiting (parking) > transactions > queue > leases > admission > rows."""

from ..tx import TX_ATTEMPTS, after_commit, emit_after_commit, transactional

__all__ = ["TX_ATTEMPTS", "after_commit", "emit_after_commit", "transactional"]
