"""The scoring model, pure: no database, no Flask, no Kafka. Behaviour rules
(:mod:`.rules`), intent topics (:mod:`.intent`), fit grades (:mod:`.fit`), engagement
decay and priority (:mod:`.engagement`), lifecycle moves (:mod:`.lifecycle`), everything
together as one :class:`.scoring.ScoringModel`, and replaying a stored history
(:mod:`.history`)."""
