"""Sharing personal data, made visible: every dispatch and every ads export writes an
append-only ledger line per person (:mod:`.ledger`); hashed audiences for Meta and Google
leave through Kafka (:mod:`.exports`)."""
