"""``python -m radtrace`` runs the CLI."""

from radtrace.cli import main

if __name__ == "__main__":  # a spawned process (the worker's draft pool) imports this module as __mp_main__
    main()
