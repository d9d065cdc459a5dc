"""The Typer command-line app: parsing, progress and exit codes only."""
