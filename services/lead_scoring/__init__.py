"""lead-scoring: builds leads from traffic, scores them with explained points, moves them
through lifecycle stages, and serves sales (API and pages)."""
