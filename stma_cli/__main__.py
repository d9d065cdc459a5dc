"""`python -m stma_cli` runs the command-line tool."""
from stma_cli.cli.app import main

main()
