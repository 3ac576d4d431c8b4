"""``python -m cli`` runs the ``lookalike`` command line."""

from cli.app import app

app()
