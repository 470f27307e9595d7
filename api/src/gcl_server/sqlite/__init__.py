"""SQLite's single writer process (switch: GCL_SQLITE_WRITER): an accelerator; nothing of the engine imports it."""
