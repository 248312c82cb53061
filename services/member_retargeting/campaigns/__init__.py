"""Campaigns: runs as chunked jobs sending exactly once (:mod:`.runs`), the schedules and
event triggers that start them (:mod:`.triggers`), and what they achieved
(:mod:`.reports`)."""
