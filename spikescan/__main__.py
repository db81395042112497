"""`python -m spikescan ...` = the `spikescan` command (also what `torchrun -m spikescan train ... --ddp` runs)."""

import sys

from spikescan.cli import main

sys.exit(main())
