"""The consumer side: what applying traffic does to leads. Identities named by an event
(:mod:`.identities`), lead state in the database (:mod:`.store`; a poll batch's unit of
work in :mod:`.batch`), applying traffic step by step (:mod:`.traffic`), and the
``lead.*`` events every writer publishes (:mod:`.lead_events`)."""
