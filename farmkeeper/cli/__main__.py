"""``python -m farmkeeper.cli``: the same as the ``farmkeeper`` command."""

from farmkeeper.cli import app

app()
