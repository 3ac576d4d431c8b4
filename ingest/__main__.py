"""``python -m ingest`` runs the ``lookalike`` command line."""

from ingest.cli import app

app()
