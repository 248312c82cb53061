"""member-retargeting's pure model: no database, no Flask."""
