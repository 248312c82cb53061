"""Funnel's shared package: event schemas, topic registry, Kafka runner, config and DB helpers.

Services depend on this package; it depends on no service.
"""
