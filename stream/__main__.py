"""``python -m stream`` is the ``riskstream`` command."""

from stream.cli import main

main()
