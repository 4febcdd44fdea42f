"""``python -m edgeloop``: the ``edgeloop`` command line."""

from edgeloop.cli import main

main()
