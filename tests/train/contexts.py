"""Worker contexts for stage-loop tests."""

from __future__ import annotations

from vlsa_platform.train.loop import LocalContext


class Interrupt(Exception):
    """Raised by :class:`CrashingContext` in place of a worker's death."""


class CrashingContext(LocalContext):
    """Dies right after the first checkpoint was taken (as a worker killed then would); used again, it hands
    that checkpoint back, as Ray Train does to a replacement worker."""

    def report(self, metrics, checkpoint_dir=None):
        super().report(metrics, checkpoint_dir)
        if checkpoint_dir is not None and len(self.checkpoints) == 1:
            raise Interrupt
