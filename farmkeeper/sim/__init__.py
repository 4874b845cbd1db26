"""The farm simulator: one OS process per server that answers its health probe and records footage.

Never used inside product flows; it exists for tests, benchmarks and the demo.

* ``farmkeeper sim FARMFILE`` starts one process per server of the farm file and waits; each
  writes ``<state dir>/<server>.pid`` (kill that pid to simulate a dead server) and
  ``<state dir>/<server>.status.json`` (per camera: last closed segment, files written).
* ``farmkeeper sim FARMFILE --only SERVER`` runs one server in the foreground (restart after a kill).
* A server process binds the host:port of its ``health: tcp://…`` or ``http://…`` URL and answers
  TCP connects and ``GET /health`` with 200. ``smb`` probes are not simulated.
* Every ~1 s it reads the inventory (``FARMKEEPER_DATABASE_URL``) for the cameras whose ``current``
  is this server and records them into the local ``path`` of its volumes, in the DESIGN.md layout,
  honouring each camera's storage path list and the availability mode.
* A segment is written as ``.<name>`` next to its final name and renamed when closed (the
  segment-closed rule of ``farmkeeper.failover``).
"""

from __future__ import annotations

from farmkeeper.sim.recorder import (
    DEFAULT_BITRATES,
    ServerSim,
    SimOptions,
    parse_bitrates,
    read_status,
)
from farmkeeper.sim.supervisor import pid_file, read_pid, run_farm, run_server, start_farm

__all__ = ["DEFAULT_BITRATES", "ServerSim", "SimOptions", "parse_bitrates", "pid_file", "read_pid", "read_status",
           "run_farm", "run_server", "start_farm"]
