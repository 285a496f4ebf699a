"""offload: background jobs, events, schedules and results for Python."""
