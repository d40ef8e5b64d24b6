"""`python -m benchmarks NAME [ARGS]`: the one runner of the benchmarks (benchmarks/cli.py)."""

import sys

from benchmarks.cli import main

sys.exit(main())
