"""Shared stage prefixes: runs whose first k stages have the same inputs train them once.

A stage's *prefix* is the stage with every stage before it. Two runs of one experiment whose prefixes up to a
stage resolve alike — the same inputs to each of those stages (``ExperimentConfig.stage_inputs``: its section
and loss as training applies them, the model, the seed, the data it reads), the same planned steps and
placement, and the same code (this package's sources and the versions of the libraries that train) — would
train the same weights. The first run to get there trains the stage and *publishes* it; the others wait for the
publication and adopt it: the stage's completion marker in their own run folder points at the publishing run's
checkpoint (its export is what their next stage starts from), MLflow links the two runs and copies the stage's
metric series (:mod:`..tracking.shared`).

Layout, beside the experiment's runs (local folder or ``s3://``)::

    <storage>/<experiment>/prefixes/<stage>-<digest>/
        claim.json       who trains it: the run folder that claimed it and when it last said it is alive
        published.json   its completion marker (``StageOutcome``) and the run that trained it

Racing runs are kept apart by conditional writes (``storage.create_exclusive`` / ``replace_if``: a hard link
locally, ``If-None-Match`` / ``If-Match`` on S3): exactly one run holds a claim. The claiming driver renews it
every ``HEARTBEAT_S``; a claim not renewed for ``STALE_AFTER_S`` (its run was killed) or released (its run
failed) is taken over by the next run that needs the stage. A run re-launched under the same folder takes its own
claim back. Rank 0 of the training run publishes a stage right after writing its completion marker; of two
publications (a claim taken over from a run that was only slow) the first stays — both trained the same inputs.

Which stages are shared (:func:`shareable_stages`): every stage but a run's last (its own result, which Tune
reads, comes from a stage it trains) and, under an ASHA sweep, none from the stage the rungs count from on
(a stage before it reports nothing ASHA decides on).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from .. import storage
from ..cluster import ResolvedPlacement
from ..config.schema import ExperimentConfig
from ..train.spec import EXPORT_DIR

log = logging.getLogger(__name__)

PREFIXES_DIR = "prefixes"
CLAIM_FILE = "claim.json"
PUBLISHED_FILE = "published.json"
HEARTBEAT_S = 20.0
"""How often the driver holding a claim renews it."""
STALE_AFTER_S = 180.0
"""A claim not renewed for this long belongs to a run that died: the next run that needs the stage takes it."""
_LIBRARIES = ("torch", "transformers", "diffusers", "deepspeed", "peft")


@functools.cache
def code_digest() -> str:
    """SHA-256 of this package's Python sources and the versions of the libraries that train: "the same
    code" of two runs."""
    digest = hashlib.sha256()
    package = Path(__file__).resolve().parents[1]
    for path in sorted(package.rglob("*.py")):
        digest.update(str(path.relative_to(package)).encode() + b"\0" + path.read_bytes() + b"\0")
    for name in _LIBRARIES:
        try:
            digest.update(f"{name}=={metadata.version(name)}\0".encode())
        except metadata.PackageNotFoundError:
            digest.update(f"{name} absent\0".encode())
    return digest.hexdigest()


def prefix_digests(
    config: ExperimentConfig, steps: Mapping[str, int | None], placements: Mapping[str, ResolvedPlacement]
) -> dict[str, str]:
    """Per stage, in order, the SHA-256 of its prefix: the inputs, planned steps and placement of it and every
    stage before it, and :func:`code_digest`. Equal digests, equal weights out."""
    digests: dict[str, str] = {}
    chain = hashlib.sha256(code_digest().encode())
    for stage in config.stages:
        inputs = {
            "inputs": config.stage_inputs(stage),
            "steps": steps[stage],
            "placement": placements[stage].to_dict(),
        }
        chain.update(json.dumps(inputs, sort_keys=True, separators=(",", ":"), default=str).encode())
        digests[stage] = chain.copy().hexdigest()
    return digests


def shareable_stages(stages: Sequence[str], rungs_from: str | None = None) -> set[str]:
    """The stages a run may share: all but its last, and before ``rungs_from`` (an ASHA sweep's first rung
    stage) when given."""
    end = len(stages) - 1
    if rungs_from is not None and rungs_from in stages:
        end = min(end, list(stages).index(rungs_from))
    return set(stages[:end])


def prefix_location(storage_root: str, experiment: str, stage: str, digest: str) -> str:
    """``<storage>/<experiment>/prefixes/<stage>-<digest>``: where a prefix's claim and publication live."""
    from ..tracking import names

    return storage.join(
        storage_root, names.path_part(experiment), PREFIXES_DIR, f"{names.path_part(stage)}-{digest[:24]}"
    )


def publish(location: str, outcome: Mapping[str, Any], run: Mapping[str, Any]) -> bool:
    """Rank 0, once a stage it trained is complete: record it at prefix ``location`` (``outcome``: the stage's
    ``StageOutcome`` fields; ``run``: ``name``, ``directory``, ``run_id`` of the run that trained it). ``False``
    when another run published it first."""
    record = {"outcome": dict(outcome), "run": dict(run), "published_at": time.time()}
    return storage.create_exclusive(storage.join(location, PUBLISHED_FILE), json.dumps(record)) is not None


def published(location: str) -> dict[str, Any] | None:
    """The publication at ``location``, or ``None`` while there is none (or its export is gone: the folder of
    the run that trained it was removed, and the stage must be trained again)."""
    marker = storage.join(location, PUBLISHED_FILE)
    if not storage.exists(marker):
        return None
    record = json.loads(storage.read_text(marker))
    if not storage.exists(storage.join(record["outcome"]["checkpoint"], EXPORT_DIR)):
        log.warning("%s names an export that no longer exists; training the stage again", marker)
        return None
    return record


@dataclass
class PrefixClaims:
    """The claims one run's driver holds, by stage: take with :meth:`acquire` / :meth:`claim`, keep alive with
    :meth:`kept_alive`."""

    owner: str
    """The run's folder: a re-launch of the same run owns its earlier claims."""
    heartbeat_s: float = HEARTBEAT_S
    stale_after_s: float = STALE_AFTER_S
    poll_s: float = 2.0
    """First wait between two looks at a claimed prefix (doubling up to 30 s)."""
    held: dict[str, str] = field(default_factory=dict)
    """Claim file -> its version, for every claim held."""
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def _claim_text(self, released: bool = False) -> str:
        return json.dumps(
            {
                "owner": self.owner,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "heartbeat": time.time(),
                "released": released,
            }
        )

    def claim(self, location: str) -> bool:
        """Try once to claim the prefix at ``location``: ``True`` when this run holds it now (new, its own from
        an earlier launch, or taken over from a run that released it or went silent)."""
        path = storage.join(location, CLAIM_FILE)
        version = storage.create_exclusive(path, self._claim_text())
        if version is None:
            try:
                text, current = storage.read_versioned(path)
            except storage.NotFoundError:
                return False
            claim = json.loads(text)
            free = claim.get("released") or time.time() - float(claim["heartbeat"]) > self.stale_after_s
            if claim.get("owner") != self.owner and not free:
                return False
            version = storage.replace_if(path, self._claim_text(), current)
            if version is None:
                return False
            if claim.get("owner") != self.owner:
                log.info("took over the claim on %s from %s", location, claim.get("owner"))
        with self._lock:
            self.held[path] = version
        return True

    def acquire(self, location: str) -> dict[str, Any] | None:
        """Wait until the prefix at ``location`` is published (its publication) or claimed by this run
        (``None``: train it)."""
        wait = self.poll_s
        said = False
        while True:
            record = published(location)
            if record is not None:
                return record
            if self.claim(location):
                return None
            if not said:
                log.info("waiting for another run to finish the prefix %s", location)
                said = True
            time.sleep(wait)
            wait = min(2 * wait, 30.0)

    def renew(self) -> None:
        """Renew every held claim; a claim another run took over meanwhile is dropped."""
        with self._lock:
            for path, version in list(self.held.items()):
                renewed = storage.replace_if(path, self._claim_text(), version)
                if renewed is None:
                    log.warning("lost the claim %s to another run", path)
                    del self.held[path]
                else:
                    self.held[path] = renewed

    def release(self) -> None:
        """Give up every held claim (the stages this run did not publish go to the next run that needs them)."""
        with self._lock:
            for path, version in self.held.items():
                with contextlib.suppress(storage.StorageError):
                    storage.replace_if(path, self._claim_text(released=True), version)
            self.held.clear()

    @contextlib.contextmanager
    def kept_alive(self) -> Iterator[None]:
        """Renew the held claims every ``heartbeat_s`` in a thread while the block runs; release them after."""
        done = threading.Event()

        def beat() -> None:
            while not done.wait(self.heartbeat_s):
                try:
                    self.renew()
                except storage.StorageError as exc:  # the next beat tries again; a long outage goes stale
                    log.warning("could not renew prefix claims: %s", exc)

        thread = threading.Thread(target=beat, name="prefix-claims", daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join()
            self.release()


@dataclass
class SharedPrefixes:
    """One run's side of the shared prefixes: where each of its shareable stages' prefix lives, the claims its
    driver holds, and how an adopted stage shows in its MLflow run."""

    locations: dict[str, str]
    """Shareable stage -> its prefix folder (:func:`prefix_location`)."""
    claims: PrefixClaims
    store: Any = None
    """The run's tracking store (``TrackingStore``), or ``None`` untracked."""
    run_id: str | None = None
    """The run's MLflow run."""

    @classmethod
    def for_run(
        cls,
        config: ExperimentConfig,
        storage_root: str,
        directory: str,
        planned: Sequence[Mapping[str, Any]],
        placements: Mapping[str, ResolvedPlacement],
        rungs_from: str | None = None,
        **tracking: Any,
    ) -> SharedPrefixes | None:
        """The shared prefixes of a run in ``directory`` with planned stages ``planned`` (``plan_run``'s), or
        ``None`` when the run shares nothing (``storage.share_prefixes: false``, one stage, rungs from the
        first)."""
        if not config.storage.share_prefixes:
            return None
        steps = {stage["name"]: stage["steps"] for stage in planned}
        digests = prefix_digests(config, steps, placements)
        locations = {
            stage: prefix_location(storage_root, config.name, stage, digests[stage])
            for stage in sorted(shareable_stages(list(config.stages), rungs_from))
        }
        return cls(locations, PrefixClaims(owner=directory), **tracking) if locations else None

    def adopt(self, stage: str, first_step: int) -> dict[str, Any] | None:
        """Wait for ``stage``'s prefix (:meth:`PrefixClaims.acquire`): the completion marker this run takes over
        from the run that published it (with ``shared_from``; its MLflow run linked and the stage's metrics,
        global steps after ``first_step``, copied), or ``None`` when this run claimed the stage (or it is not
        shared): train it."""
        from ..tracking import names
        from ..tracking.shared import link_shared_stage

        location = self.locations.get(stage)
        record = self.claims.acquire(location) if location is not None else None
        if record is None:
            return None
        source = record["run"]
        outcome = {**record["outcome"], "shared_from": {"run": source, "prefix": location}}
        log.info("stage %s: adopted from run %s (%s)", stage, source["name"], location)
        if self.store is not None and self.run_id:
            tags = names.shared_stage_tags(stage, source.get("run_id"), source["name"], str(location))
            steps = (first_step, int(outcome["global_step"]))
            link_shared_stage(self.store, self.run_id, tags, source.get("run_id"), steps)
        return outcome

    def claim_for_training(self, stages: Sequence[str]) -> dict[str, str]:
        """Claim the prefixes of the shareable ones of ``stages`` (about to be trained by this run): stage ->
        the prefix folder rank 0 publishes it to (a stage another live run holds is trained unshared)."""
        return {
            stage: self.locations[stage]
            for stage in stages
            if stage in self.locations and self.claims.claim(self.locations[stage])
        }


__all__ = [
    "CLAIM_FILE",
    "PREFIXES_DIR",
    "PUBLISHED_FILE",
    "PrefixClaims",
    "SharedPrefixes",
    "code_digest",
    "prefix_digests",
    "prefix_location",
    "publish",
    "published",
    "shareable_stages",
]
