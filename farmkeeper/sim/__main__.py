"""One simulated server process (spawned by ``farmkeeper sim``)."""

from __future__ import annotations

import sys

from farmkeeper.sim.supervisor import child_main

child_main(sys.argv[1:])
