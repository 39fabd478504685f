"""``python -m archiver``: the command line."""

from archiver.cli.main import main

main()
