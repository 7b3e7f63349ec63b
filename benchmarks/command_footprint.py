"""Wall time and peak memory of a command and everything it starts (e.g. ``make demo``).

Samples every ``--interval`` seconds, until the command exits:

- ``tree_rss_gib``: the summed resident memory of the command's process tree (Ray's processes included: the
  embedded Ray is started by the driver); shared pages count once per process, so it is an upper bound;
- ``tree_pss_gib``: the summed proportional set size (shared pages split between their processes; Linux
  ``smaps_rollup``) — the tree's share of physical memory. Reading it is not free: the kernel walks each
  process's page tables (about 30 ms for a process holding 1 GiB here, so most of a second for a Ray sweep's
  tree on every sample, which slowed the very command being measured). It is therefore sampled within a CPU
  budget (``--pss-budget``, a share of one core: after a pass that took t seconds the next waits t / budget)
  and at least once; the tree's RSS and the system's use (cheap) are sampled every interval, and bound it;
- ``system_used_gib``: the machine's used memory above what it was before the command started (meaningful
  when nothing else runs).

Prints one JSON line with the peaks and the wall time, then a readable line; the command's own output goes to
``--log`` (default: inherited).

    .venv/bin/python benchmarks/command_footprint.py [--log demo.log] -- make demo
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import time

import psutil

GIB = 1024**3


def _tree(root: psutil.Process) -> list[psutil.Process]:
    try:
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def _pss(proc: psutil.Process) -> int:
    try:
        with open(f"/proc/{proc.pid}/smaps_rollup") as rollup:
            for line in rollup:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between RSS samples")
    parser.add_argument(
        "--pss-budget",
        type=float,
        default=0.1,
        help="share of one core the PSS passes may take (each reads every process's smaps_rollup)",
    )
    parser.add_argument("--log", default=None, help="file for the command's output")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND...")
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command after --")
    baseline = psutil.virtual_memory().used
    out = open(args.log, "w") if args.log else None  # noqa: SIM115 - closed below
    started = time.perf_counter()
    child = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT if out else None)
    root = psutil.Process(child.pid)
    peak = {"tree_rss_gib": 0.0, "tree_pss_gib": 0.0, "system_used_gib": 0.0, "processes": 0}
    pss_passes, next_pss = 0, 0.0
    while child.poll() is None:
        procs = _tree(root)
        rss = 0
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                rss += proc.memory_info().rss
        used = psutil.virtual_memory().used - baseline
        now = time.perf_counter()
        if now >= next_pss:
            pss = sum(_pss(p) for p in procs)
            spent = time.perf_counter() - now
            next_pss = now + spent / args.pss_budget
            pss_passes += 1
            peak["tree_pss_gib"] = max(peak["tree_pss_gib"], pss / GIB)
        peak["tree_rss_gib"] = max(peak["tree_rss_gib"], rss / GIB)
        peak["system_used_gib"] = max(peak["system_used_gib"], used / GIB)
        peak["processes"] = max(peak["processes"], len(procs))
        time.sleep(args.interval)
    wall = time.perf_counter() - started
    if out:
        out.close()
    result = {
        "command": command,
        "exit": child.returncode,
        "wall_s": round(wall, 1),
        **{k: round(v, 2) if isinstance(v, float) else v for k, v in peak.items()},
        "pss_passes": pss_passes,
    }
    print(json.dumps(result))
    print(
        f"{' '.join(command)}: exit {child.returncode}, {wall / 60:.1f} min, peak memory "
        f"{peak['tree_pss_gib']:.2f} GiB PSS / {peak['tree_rss_gib']:.2f} GiB RSS over {peak['processes']} "
        f"processes ({peak['system_used_gib']:.2f} GiB above the machine's baseline)"
    )
    return child.returncode


if __name__ == "__main__":
    sys.exit(main())
