"""member-retargeting: turns customers into members and runs retargeting campaigns over
segments, emitting one dispatch per recipient."""
