"""The sales handoff: routing new MQLs to reps (:mod:`.routing`, pure;
:mod:`.assignment`), accept/reject and explicit moves (:mod:`.actions`), the follow-up
SLA (:mod:`.sla`) and reps' personal tokens (:mod:`.rep_tokens`)."""
