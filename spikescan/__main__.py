"""`python -m spikescan ...` = the `spikescan` command (also what `torchrun -m spikescan train ... --ddp` runs)."""

import os
import sys

from spikescan.cli import main

code = main()
if os.environ.get("LOCAL_RANK") is not None and "--ddp" in sys.argv:
    # A torchrun worker has written its outputs and closed its process group by now. Skip the
    # interpreter's teardown: native libraries' static destructors (JIT engines, gloo threads)
    # sometimes aborted a worker at exit ("terminate called without an active exception"),
    # turning a finished run into a failed one.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code if isinstance(code, int) else 0)
sys.exit(code)
