"""`python -m bkr.cli`: the `bkr` command without its installed script (tests spawn it so)."""

from bkr.cli import main

main()
