"""Entry point of a submission's driver inside a Ray job (``vlsa-platform submit --address``).

    python -m vlsa_platform.orchestration.entry submission.json [--resume]

``submission.json`` is the :class:`~.submission_types.SubmissionSpec` the client wrote into the job's working
directory. The driver connects to the cluster it runs on, runs the submission and prints its progress (the
job's logs). Exit status: 0 when every trial finished or was stopped early by the scheduler, 1 when a trial
failed or the submission was interrupted, 3 when the cluster cannot run a trial.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from ..exits import EXIT_FAILED, EXIT_OK, EXIT_RESOURCES


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vlsa_platform.orchestration.entry")
    parser.add_argument("spec", help="submission.json written by `vlsa-platform submit --address`")
    parser.add_argument("--resume", action="store_true", help="continue the submission's Tune experiment")
    args = parser.parse_args(argv)

    import ray

    from .submission import run_submission
    from .submission_types import ClusterResourceError, SubmissionSpec

    spec = SubmissionSpec.from_dict(json.loads(Path(args.spec).read_text()))
    ray.init(address="auto", log_to_driver=False)

    def say(line: str) -> None:
        print(line, flush=True)

    def on_parent(run_id: str, uri: str) -> None:
        say(f"MLflow experiment {spec.experiment!r}, parent run {run_id} ({uri})")

    try:
        result = run_submission(spec, resume=args.resume, say=say, on_parent=on_parent)
    except ClusterResourceError as err:
        print(f"vlsa-platform: {err}", file=sys.stderr, flush=True)
        return EXIT_RESOURCES
    for trial in result.trials:
        say(f"{trial.name}: {trial.status}")
    return EXIT_FAILED if result.failed or result.interrupted else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
