"""lead-scoring: builds leads from traffic, scores them with explained points, moves them
through lifecycle stages, and serves sales (API and pages).

Layers, innermost first:

* ``model/`` — the scoring model, pure (no database, no Flask): rules, intent, fit,
  engagement, lifecycle, :class:`~.model.scoring.ScoringModel`, history replay.
* ``processing/`` — the consumer side: identities, lead state (``LeadStore``, a poll
  batch's ``TrafficBatch``), applying traffic step by step, the lead events it builds.
* ``rulesets/`` — scoring rules as versioned data and rescoring from history.
* ``handoff/`` — the sales handoff: routing, assignment, actions, the SLA, rep tokens.
* ``jobs/`` — the consumer process's timers: rescore, SLA escalation.
* ``web/`` — one blueprint per module (leads, reps, rules, pages) over one read model.

At the top: ``config.py`` (the environment, read once), ``models.py`` (tables),
``state.py`` (the app's typed state), ``app.py``, ``consumer.py``, ``__main__.py``.
"""
