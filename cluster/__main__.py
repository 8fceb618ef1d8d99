"""``python -m cluster up|down|status|test``: what ``make cluster``, ``cluster-stop`` and ``cluster-test`` run."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from cluster import control
from cluster.topology import ROOT, Topology


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cluster", description=__doc__)
    parser.add_argument("command", choices=("up", "down", "status", "test"))
    parser.add_argument("--dir", type=Path, default=ROOT / "var" / "cluster", help="where the cluster keeps its files")
    parser.add_argument("--port-base", type=int, default=int(os.environ.get("CLUSTER_PORT_BASE", "19000")))
    parser.add_argument("--nodes", type=int, default=2, help="platform nodes behind HAProxy (1-3)")
    parser.add_argument("--seconds", type=float, default=20.0, help="test: load before and between faults")
    parser.add_argument("--keep", action="store_true", help="test: keep the cluster's folder and logs even when it passes")
    args = parser.parse_args(argv)
    if not 1 <= args.nodes <= 3:
        parser.error("--nodes must be 1, 2 or 3")
    topo = Topology(args.dir.resolve(), args.port_base, args.nodes)
    if args.command == "up":
        control.up(topo)
        print(control.describe(topo))
        print("stop it with: make cluster-stop")
    elif args.command == "down":
        stopped = control.down(topo)
        print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
    elif args.command == "status":
        print(control.describe(topo))
    else:
        from cluster import failover

        return failover.main(seconds=args.seconds, keep=args.keep)
    return 0


if __name__ == "__main__":
    sys.exit(main())
