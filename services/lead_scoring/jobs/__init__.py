"""Work the consumer process does between batches, as runner timers: rescoring after a
rule-set change (:mod:`.rescore`) and SLA escalation (:mod:`.sla`). Each isolates the
lead at fault (a dead letter) so one bad lead never holds the rest back."""
