"""Funnel's services. Each package is independent: none imports another."""
