"""Deployment: the development supervisor (``make run``) and gunicorn's config."""
