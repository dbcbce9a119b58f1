"""`python -m blackboard` runs the CLI."""

from blackboard.cli import app

app()
