"""Celery app factory, thin tasks and the study pipeline (pipeline.py has no Celery imports)."""
