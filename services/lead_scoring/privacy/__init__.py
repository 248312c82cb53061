"""Privacy, coordinated here because lead-scoring knows who is who (the identity graph):
requests start from any one identifier and name the whole person (:mod:`.requests`);
every service, this one included, erases (:mod:`.erasure`) or exports (:mod:`.access`)
what it holds and answers on the privacy topic; the answers make a request's status."""
