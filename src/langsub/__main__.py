"""python -m langsub <command> ... (the same as the `langsub` console script)."""
from langsub.cli import main

main()
