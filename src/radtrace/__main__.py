"""``python -m radtrace`` runs the CLI."""

from radtrace.cli import main

main()
