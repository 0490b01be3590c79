"""`python -m producer.cli`: the same as the `producer` command (as when the CLI was one module)."""

from producer.cli import main

main()
