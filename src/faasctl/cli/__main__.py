"""``python -m faasctl.cli``: the same as the ``faasctl`` command."""

from faasctl.cli.main import app

app(prog_name="faasctl")
