"""``python -m salesml.cli``: the same as the ``salesml`` command."""

from salesml.cli import app

app()
