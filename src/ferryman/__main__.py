"""``python -m ferryman`` is the ``ferryman`` command."""

from ferryman.cli.app import main

main()
