"""The consumer side: contacts from lead events (:mod:`.leads`), and from traffic what
people bought, did and decided about consent (:mod:`.traffic`)."""
