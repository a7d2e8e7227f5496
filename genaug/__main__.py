"""`python -m genaug` runs the command line."""

from .cli import main

main()
