"""`python -m finetune` (and `torchrun -m finetune`) runs the CLI."""

import sys

from finetune.cli import main

sys.exit(main())
