"""A handler module whose init fails, as the router's does on a bad setting (the runtime loop's init-error test)."""

raise ValueError("SPILLWAY_DEADLINE_MARGIN_MS must be a number >= 0")
