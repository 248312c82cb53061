"""The web layer: one blueprint per module — the sales API on leads (:mod:`.leads`), reps
(:mod:`.reps`), scoring rules (:mod:`.rules`) and the sales pages (:mod:`.pages`,
templates in ``templates/``) — over one read model (:mod:`.queries`) and the HTTP schemas
(:mod:`.schemas`). HTTP schemas are not event schemas and not ORM models."""
