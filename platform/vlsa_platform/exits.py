"""Exit statuses of ``vlsa-platform`` and of a submission's driver inside a Ray job: one definition, imported by
the CLI and by orchestration (which maps its errors to them)."""

EXIT_OK = 0
"""Done: every trial finished (or was stopped early by the scheduler), or the verb did what it was asked."""
EXIT_FAILED = 1
"""A trial or job failed, or the submission was stopped."""
EXIT_CONFIG = 2
"""Bad input: the experiment file, ``--set``, ``--address``, a submission name, usage."""
EXIT_RESOURCES = 3
"""The cluster cannot run a trial (no node of the accelerator class, too few GPUs/CPUs) within the timeout."""
EXIT_UNREACHABLE = 4
"""No Ray dashboard answers at ``--address``."""
EXIT_AUTH = 5
"""The cluster wants a token and got none or a wrong one."""
EXIT_PREFLIGHT = 6
"""The pre-flight check before anything starts failed: the run storage (``storage.path``) does not take a probe
object's write, read and delete, or the tracking server does not answer or refuses the credentials."""
EXIT_INTERRUPTED = 130
"""Interrupted (Ctrl-C, ``vlsa-platform stop``)."""

__all__ = [
    "EXIT_AUTH",
    "EXIT_CONFIG",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_PREFLIGHT",
    "EXIT_RESOURCES",
    "EXIT_UNREACHABLE",
]
