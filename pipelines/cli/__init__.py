"""`recycle`, the command line (typer): one module per command group, each command a
module-level function that parses options and calls the package. ``app`` builds the Typer app;
``main`` is the console script.
"""

from pipelines.cli.app import app, main

__all__ = [
    "app",
    "main",
]
