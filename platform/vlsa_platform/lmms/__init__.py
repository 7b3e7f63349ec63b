"""The VLSA model for lmms-eval, the community's benchmark harness (docs/evaluation.md).

- :mod:`.model` — ``VLSA``, an lmms-eval model (``--model vlsa``) over an exported stage: greedy generation and
  log-likelihoods through the platform's own chat encoding, image tiling and ``generate``.
- :mod:`.manifest` — its registration (entry-point group ``lmms_eval.models``).
- :mod:`.loading` and :mod:`.prompts` — the export checked against its experiment config and loaded; a
  question as the platform's validation would pose it (no lmms-eval import: usable and tested without it).
- ``tasks/`` — lmms-eval tasks built from the bundled synthetic data (:data:`TASKS_DIR`, given to lmms-eval as
  ``--include_path``), and :mod:`.synthetic_task`, which writes their documents.

lmms-eval lives in its own environment (``make install-eval``: ``.venv/eval``), not the training one; only this
package imports it, and importing this ``__init__`` does not.
"""

from __future__ import annotations

from pathlib import Path

#: The folder of the platform's lmms-eval tasks: ``lmms-eval --include_path`` (or ``TaskManager(include_path=)``).
TASKS_DIR = Path(__file__).resolve().parent / "tasks"

__all__ = ["TASKS_DIR"]
