"""The ``faasctl`` command line: thin typer commands over the library."""

from __future__ import annotations

__all__ = ["main"]


def main() -> None:
    """Run the ``faasctl`` command: the entry point of its console script.

    The typer app is imported only here, when the command runs: the local engine's workers
    (``spawn``) run the console script again as their ``__main__``, and with the app imported at
    its top each would import typer, rich and every command first (~0.3 s of a worker's start).
    """
    from faasctl.cli.main import app

    app()
