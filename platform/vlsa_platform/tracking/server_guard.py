"""A watchdog that keeps a server from outliving the process that started it.

Run as a script (standard library only, so it starts in milliseconds)::

    python server_guard.py OWNER_PID -- CMD ARGS...

It runs ``CMD`` as its child, in its own process group (start it with ``start_new_session=True``), and ends
that whole group — the server and any worker processes the server forked — once ``OWNER_PID`` is no longer
its parent: the owner exited or was killed, even with SIGKILL. It polls its parent rather than relying on a
parent-death signal (``PR_SET_PDEATHSIG``): that signal reaches only the guard's direct child, not the
uvicorn process ``mlflow server`` starts, and it is Linux-only. SIGTERM or SIGINT to the guard ends the
group the same way. The guard exits with the server's exit status.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

POLL_S = 0.5
"""How often the guard looks whether its owner is still its parent."""
GRACE_S = 10.0
"""How long the server has to exit after SIGTERM before the group is sent SIGKILL."""


def _end_group(child: subprocess.Popen[bytes]) -> int:
    """SIGTERM to the guard's process group, then SIGKILL after :data:`GRACE_S`; the child's exit status."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the guard itself is in the group
    os.killpg(os.getpgrp(), signal.SIGTERM)
    try:
        return child.wait(timeout=GRACE_S)
    except subprocess.TimeoutExpired:
        os.killpg(os.getpgrp(), signal.SIGKILL)  # ends the guard too
        return -signal.SIGKILL


def main(argv: list[str]) -> int:
    """``OWNER_PID -- CMD...``: run ``CMD`` until it exits, the owner dies, or the guard is told to stop."""
    if len(argv) < 3 or argv[1] != "--":
        print("usage: server_guard.py OWNER_PID -- CMD [ARGS...]", file=sys.stderr)
        return 2
    owner = int(argv[0])
    stopping: list[int] = []

    def on_signal(signum: int, frame: object) -> None:
        stopping.append(signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if os.getppid() != owner:  # the owner died before the guard got this far
        return 1
    child = subprocess.Popen(argv[2:])
    while not stopping and os.getppid() == owner:
        try:
            return child.wait(timeout=POLL_S)
        except subprocess.TimeoutExpired:
            continue
    return _end_group(child)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
