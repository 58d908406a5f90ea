"""`python -m paperwire` is the `paperwire` command."""

from paperwire.cli import main

main()
