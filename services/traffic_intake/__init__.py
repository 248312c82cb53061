"""traffic-intake: the Segment-compatible HTTP API that makes visitor events durable and
publishes them to the traffic topic."""
