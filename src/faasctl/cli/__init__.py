"""The ``faasctl`` command line: thin typer commands over the library."""
