"""``python -m kubetune.cli``: the ``kubetune`` console script."""

from kubetune.cli import app

app()
