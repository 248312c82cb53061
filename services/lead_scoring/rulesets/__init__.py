"""Scoring rule sets as versioned data: documents and their validation
(:mod:`.documents`), the newest version as the running processes see it
(:mod:`.active`), and rescoring leads from their stored history (:mod:`.rescoring`)."""
