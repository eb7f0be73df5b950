"""Command line: one thin subcommand per step, each calling a Python function on files."""
