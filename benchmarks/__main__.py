"""`python -m benchmarks NAME [ARGS]`: the one runner of the benchmarks (benchmarks/runner.py)."""

import sys

from benchmarks.runner import main

sys.exit(main())
