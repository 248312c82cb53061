"""The scheduler process (:mod:`.scheduler`): campaign runs, schedules, event triggers,
and the daily member review. A process of its own, never a gunicorn worker."""
