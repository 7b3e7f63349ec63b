"""Read an experiment file: YAML (``safe_load`` rules) -> ``extends`` chain -> ``--scale`` -> ``--set`` -> schema.

Every failure is a :class:`~.errors.ConfigError` whose lines say where (``file.yaml:LINE``, ``--set k=v`` or
``--scale tiny``) and which field (its dotted path). Line numbers come from the nodes ``yaml.compose`` builds;
the loader keeps, for every key of the merged mapping, the place its value was last set, so an error in a
value inherited through ``extends`` points into the file that wrote it. Files and ``--set`` values are read
within the bounds of :mod:`.bounded_yaml` (size, values with aliases expanded, nesting).

``--scale tiny`` (DESIGN.md §4) swaps in the tiny model preset (its sub-models pretrained by the platform on the
synthetic data: ``model.tiny_weights``) and the bundled synthetic data, and keeps losses, sweep, ablation and
tracking as written. The stages keep their order, trainable parts and data, and are sized so a laptop sees a
tiny model learn in each of them:

- one CPU worker, micro-batch 1, global batch :data:`TINY_GLOBAL_BATCH` (so gradient accumulation is still
  exercised), no offload; ZeRO-3 runs as ZeRO-2 (one rank has nothing to partition, and ZeRO-3's gathers made
  a tiny stage 3 four times slower on a CPU: 37 s against 9 s for 16 steps);
- a stage given in ``epochs`` runs :data:`TINY_STAGE_STEPS` optimizer steps (an epoch of the synthetic bundle
  would be hundreds of steps on a laptop); one given in ``steps`` keeps them;
- each stage's learning rates are scaled by one factor that brings its ``default`` to :data:`TINY_LR`, so the
  ratios between its parts stay the paper's (the vision tower's 10x lower): the paper's 2e-5 moves a 2-layer,
  width-64 model nowhere in 16 steps;
- validation reads :data:`TINY_VALIDATION_SAMPLES` records of the bundle's held-out split every
  :data:`TINY_VALIDATION_EVERY` steps (twice per stage: the report's curves have a point mid-stage);
- ``evaluate`` scores the platform's local lmms-eval tasks (:data:`TINY_EVAL_TASKS`, :data:`TINY_EVAL_LIMIT`
  documents each, on a CPU) instead of the paper's benchmarks, and an ``eval/`` ``sweep.metric`` becomes
  :data:`TINY_EVAL_METRIC`.

``--set`` applies after ``--scale``, so ``--scale tiny --set stages.stage1.placement.num_workers=2`` runs two
CPU workers and ``--set stages.stage3.placement.zero_stage=3`` keeps ZeRO-3.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import ValidationError

from .bounded_yaml import MAX_FILE_BYTES, BoundedLoader, YamlLimit, refused_character
from .errors import ConfigError, Loc, dotted
from .explain import explain
from .keys import KeyIssue, check_key, deep_merge, parse_assignment, set_dotted, shorten
from .schema import SYNTHETIC_DATASET, ExperimentConfig

Scale = Literal["paper", "tiny"]
SCALES: tuple[str, ...] = ("paper", "tiny")

#: Dataset that ``--scale tiny`` adds for validation: the synthetic bundle's held-out split.
TINY_VALIDATION_DATASET = "synthetic_val"

#: Global batch of every stage at ``--scale tiny`` (micro-batch 1 on one worker: 2 accumulation steps).
TINY_GLOBAL_BATCH = 2

#: Optimizer steps of a stage that the file sizes in ``epochs``, at ``--scale tiny``.
TINY_STAGE_STEPS = 8

#: Held-out records each validation pass reads at ``--scale tiny``.
TINY_VALIDATION_SAMPLES = 8

#: Steps between validations at ``--scale tiny``.
TINY_VALIDATION_EVERY = 4

#: Every stage's ``lr.default`` at ``--scale tiny`` (its other parts' rates keep their ratio to it).
TINY_LR = 1.0e-3

#: The benchmarks of ``evaluate.tasks`` at ``--scale tiny``: the platform's local lmms-eval tasks.
TINY_EVAL_TASKS = ("vlsa_synthetic_vqa", "vlsa_synthetic_mc")
#: Documents per task at ``--scale tiny``.
TINY_EVAL_LIMIT = 8
#: What an ``eval/...`` ``sweep.metric`` becomes at ``--scale tiny`` (higher is better, as for the paper's
#: benchmark scores).
TINY_EVAL_METRIC = "eval/vlsa_synthetic_vqa/exact_match"

#: The highest ZeRO stage at ``--scale tiny`` (one worker: ZeRO-3 has nothing to partition).
TINY_MAX_ZERO_STAGE = 2

Lines = dict[Loc, str]


def _shown(path: Path) -> str:
    """A path as the user would write it: relative to the working directory when inside it."""
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return str(path)
    return str(path) if rel.startswith("..") else rel


def read_yaml(text: str, shown: str) -> tuple[Any, Lines]:
    """Parse one YAML document with ``SafeLoader`` semantics; also return ``{key path: "file:LINE"}``.

    Duplicate keys are an error (plain ``safe_load`` silently keeps the last one), and so is a document past
    the bounds of :mod:`.bounded_yaml` (values with aliases expanded, nesting), refused while it is composed.
    """
    lines: Lines = {(): f"{shown}:1"}
    plain = {yaml.MappingNode: "tag:yaml.org,2002:map", yaml.SequenceNode: "tag:yaml.org,2002:seq"}

    def construct(node: yaml.Node, loc: Loc) -> Any:
        try:
            return loader.construct_object(node, deep=True)
        except (ValueError, OverflowError) as err:  # a scalar its tag cannot hold: 2001-13-45, 5000 digits
            raise ConfigError(f"{shown}:{node.start_mark.line + 1}: {dotted(loc)}: {err}") from None
        except yaml.constructor.ConstructorError:  # a tag SafeLoader has no constructor for (!!python/...)
            raise ConfigError(
                f"{shown}:{node.start_mark.line + 1}: {dotted(loc)}: unsupported YAML tag {node.tag}"
            ) from None

    def build(node: yaml.Node, loc: Loc) -> Any:
        # The composer has refused aliases inside themselves and documents past the bounds, so this
        # recursion is at most MAX_DEPTH deep and visits at most MAX_VALUES nodes.
        at = f"{shown}:{node.start_mark.line + 1}"
        if type(node) in plain and node.tag != plain[type(node)]:
            raise ConfigError(f"{at}: {dotted(loc)}: unsupported YAML tag {node.tag}")
        if isinstance(node, yaml.MappingNode):
            loader.flatten_mapping(node)
            out: dict[str, Any] = {}
            for key_node, value_node in node.value:
                key = construct(key_node, loc)
                here = f"{shown}:{key_node.start_mark.line + 1}"
                if not isinstance(key, str):
                    raise ConfigError(
                        f"{here}: {dotted(loc)}: key {key!r} is not a name (YAML reads bare on/off/yes/no as "
                        "booleans and bare numbers as numbers; quote it)"
                    )
                if key in out:
                    raise ConfigError(f"{here}: {dotted((*loc, key))}: duplicate key")
                lines[(*loc, key)] = here
                out[key] = build(value_node, (*loc, key))
            return out
        if isinstance(node, yaml.SequenceNode):
            items = []
            for i, item in enumerate(node.value):
                lines[(*loc, i)] = f"{shown}:{item.start_mark.line + 1}"
                items.append(build(item, (*loc, i)))
            return items
        return construct(node, loc)

    try:
        loader = BoundedLoader(text)
    except yaml.reader.ReaderError as err:
        line, what = refused_character(text, err)
        raise ConfigError(f"{shown}:{line}: invalid YAML: {what}") from None
    try:
        node = loader.get_single_node()
        data = None if node is None else build(node, ())
    except YamlLimit as limit:
        raise ConfigError(f"{shown}:{limit.line}: {dotted(limit.loc)}: {limit.message}") from None
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line = f":{mark.line + 1}" if mark is not None else ""
        what = err.problem or err.context or "syntax error"
        raise ConfigError(f"{shown}{line}: invalid YAML: {what}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{shown}: invalid YAML: {err}") from None
    finally:
        loader.dispose()
    return data, lines


def _forget(lines: Lines, gone: Iterable[Loc]) -> Lines:
    """Drop the locations at or below any of ``gone``."""
    gone = list(gone)
    return {loc: at for loc, at in lines.items() if not any(loc[: len(g)] == g for g in gone)}


def _read_text(path: Path, shown: str) -> str:
    """The file's text; refused past :data:`~.bounded_yaml.MAX_FILE_BYTES` without reading further."""
    try:
        with path.open("rb") as stream:
            data = stream.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(f"{shown}: no such experiment file") from None
    except OSError as err:
        raise ConfigError(f"{shown}: cannot read: {err}") from None
    if len(data) > MAX_FILE_BYTES:
        line = data.count(b"\n", 0, MAX_FILE_BYTES) + 1
        raise ConfigError(
            f"{shown}:{line}: the file passes {MAX_FILE_BYTES // 1024} KiB here, the most an experiment file "
            "may hold (a real one is a few KB)"
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise ConfigError(
            f"{shown}:{line}: cannot read: not UTF-8 ({err.reason} at byte {err.start})"
        ) from None


def _read_chain(
    path: Path, shown: str, chain: tuple[Path, ...] = ()
) -> tuple[dict[str, Any], Lines, Path | None]:
    """The file merged over everything it ``extends`` (transitively); also its parent's absolute path."""
    text = _read_text(path, shown)
    data, lines = read_yaml(text, shown)
    if data is None:
        raise ConfigError(
            f"{shown}:1: the file is empty; an experiment file is a mapping (name:, data:, stages:...)"
        )
    if not isinstance(data, dict):
        raise ConfigError(
            f"{shown}:1: an experiment file is a mapping (name:, data:, stages:...), not a {type(data).__name__}"
        )
    if "extends" not in data:
        return data, lines, None
    parent_ref = data.pop("extends")
    at = lines[("extends",)]
    if not isinstance(parent_ref, str) or not parent_ref:
        raise ConfigError(f"{at}: extends: expected the path of another experiment file")
    parent = (path.parent / parent_ref).resolve()
    here = (*chain, path.resolve())
    if parent in here:
        cycle = " -> ".join(_shown(p) for p in (*here[here.index(parent) :], parent))
        raise ConfigError(f"{at}: extends: cycle: {cycle}")
    if not parent.is_file():
        raise ConfigError(f"{at}: extends: no such file: {_shown(parent)} (paths are relative to {shown})")
    base, base_lines, _ = _read_chain(parent, _shown(parent), here)
    replaced: list[Loc] = []
    merged = deep_merge(base, data, replaced)
    lines = {**_forget(base_lines, replaced), **{k: v for k, v in lines.items() if k != ("extends",)}}
    return merged, lines, parent


def _mapping(parent: dict[str, Any], key: str) -> dict[str, Any] | None:
    """``parent[key]`` when it is (or, absent, becomes) a mapping; None when it holds something else."""
    if key not in parent:
        parent[key] = {}
    value = parent[key]
    return value if isinstance(value, dict) else None


def _tiny_lr(stage: dict[str, Any], loc: Loc, put: Any) -> None:
    """Scale a stage's learning rates by the factor that makes its ``default`` :data:`TINY_LR` (left alone when
    they are not plain numbers: the schema then names what is wrong)."""
    lrs = stage.get("lr")
    if not isinstance(lrs, dict):
        return
    default = lrs.get("default")
    numbers = all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in lrs.values() if v is not None
    )
    if not numbers or not isinstance(default, int | float) or default <= 0:
        return
    factor = TINY_LR / default
    for part, value in list(lrs.items()):
        if value is not None and value > 0:
            put(lrs, (*loc, "lr"), part, float(f"{value * factor:.6g}"))


def apply_scale(raw: dict[str, Any], lines: Lines, scale: Scale) -> None:
    """Rewrite ``raw`` in place for ``scale`` (``paper`` leaves the file as written)."""
    if scale not in SCALES:
        raise ConfigError(f"--scale {scale}: expected one of {', '.join(SCALES)}")
    if scale == "paper":
        return
    origin = f"--scale {scale}"
    changed: list[Loc] = []

    def put(node: dict[str, Any], loc: Loc, key: str, value: Any) -> None:
        node[key] = value
        changed.append((*loc, key))

    def drop(node: dict[str, Any], loc: Loc, key: str) -> None:
        if node.pop(key, None) is not None:
            changed.append((*loc, key))

    model = _mapping(raw, "model")
    if model is not None:
        put(model, ("model",), "preset", "tiny")
        drop(model, ("model",), "weights")  # random weights: nothing to download
        drop(model, ("model",), "recon_resolution")  # the tiny preset's default
    data = _mapping(raw, "data")
    if data is not None:
        drop(data, ("data",), "root")
        put(data, ("data",), "loader_workers", 0)  # tiny samples: extra processes cost more than they save
        datasets = data.get("datasets")
        if isinstance(datasets, dict):
            for name in datasets:
                put(datasets, ("data", "datasets"), name, {"path": SYNTHETIC_DATASET})
            validation = _mapping(data, "validation")
            if validation is not None:
                # The bundle's held-out split: holding records out of its small train split would leave
                # little to train on.
                put(
                    datasets,
                    ("data", "datasets"),
                    TINY_VALIDATION_DATASET,
                    {"path": SYNTHETIC_DATASET, "split": "val"},
                )
                put(validation, ("data", "validation"), "dataset", TINY_VALIDATION_DATASET)
                put(validation, ("data", "validation"), "sampling", f"random:{TINY_VALIDATION_SAMPLES}")
                put(validation, ("data", "validation"), "holdout", False)
                put(validation, ("data", "validation"), "every_steps", TINY_VALIDATION_EVERY)
    stages = raw.get("stages")
    if isinstance(stages, dict):
        for name, stage in stages.items():
            if not isinstance(stage, dict):
                continue
            if stage.get("epochs") is not None and stage.get("steps") is None:
                drop(stage, ("stages", name), "epochs")
                put(stage, ("stages", name), "steps", TINY_STAGE_STEPS)
            _tiny_lr(stage, ("stages", name), put)
            placement = _mapping(stage, "placement")
            if placement is None:
                continue
            loc = ("stages", name, "placement")
            zero = placement.get("zero_stage")
            if isinstance(zero, int) and not isinstance(zero, bool) and zero > TINY_MAX_ZERO_STAGE:
                put(placement, loc, "zero_stage", TINY_MAX_ZERO_STAGE)
            for key, value in {
                "accelerator_type": None,
                "use_gpu": False,
                "num_workers": 1,
                "offload": "none",
                "micro_batch": 1,
                "grad_accum": None,
                "global_batch": TINY_GLOBAL_BATCH,
            }.items():
                put(placement, loc, key, value)
    _tiny_evaluation(raw, put)
    kept = _forget(lines, changed)
    lines.clear()
    lines.update(kept)
    lines.update(dict.fromkeys(changed, origin))


def _tiny_evaluation(raw: dict[str, Any], put: Any) -> None:
    """``--scale tiny`` of the ``evaluate`` section: the local tasks (the paper's benchmarks live on a hub),
    a few documents each, on a CPU; an ``eval/`` sweep metric becomes :data:`TINY_EVAL_METRIC`."""
    evaluate = raw.get("evaluate")
    if not isinstance(evaluate, dict):
        return
    loc = ("evaluate",)
    for key, value in {
        "tasks": list(TINY_EVAL_TASKS),
        "limit": TINY_EVAL_LIMIT,
        "accelerator_type": None,
        "use_gpu": False,
    }.items():
        put(evaluate, loc, key, value)
    sweep = raw.get("sweep")
    if isinstance(sweep, dict) and str(sweep.get("metric", "")).startswith("eval/"):
        put(sweep, ("sweep",), "metric", TINY_EVAL_METRIC)


def apply_overrides(raw: dict[str, Any], lines: Lines, overrides: Iterable[str]) -> None:
    """Apply ``--set key=value`` items to ``raw`` in place (values are YAML: ``10`` is an int, ``off`` False)."""
    for item in overrides:
        origin = f"--set {shorten(item)}"
        try:
            loc, value = parse_assignment(item)
            check_key(ExperimentConfig, raw, loc)
        except KeyIssue as issue:
            message = issue.message if issue.message.startswith("--set") else f"{origin}: {issue.message}"
            raise ConfigError(message) from None
        set_dotted(raw, loc, value)
        kept = _forget(lines, [loc])
        lines.clear()
        lines.update(kept)
        lines[loc] = origin


def _locator(lines: Mapping[Loc, str]) -> Any:
    def where(loc: Loc) -> str:
        for i in range(len(loc), -1, -1):
            if loc[:i] in lines:
                return lines[loc[:i]]
        return lines[()]

    return where


def load_experiment(
    path: str | os.PathLike[str], scale: Scale | None = None, overrides: Iterable[str] = ()
) -> ExperimentConfig:
    """Load, merge, scale, override and validate an experiment file.

    Args:
        path: the YAML file.
        scale: ``tiny`` swaps in the tiny preset and the bundled synthetic data (see the module docs);
            ``paper`` or ``None`` keeps the file as written.
        overrides: ``key=value`` items (``--set``), applied last, in order.

    Raises:
        ConfigError: with one ``WHERE: FIELD: WHAT`` line per problem.
    """
    file = Path(path)
    raw, lines, parent = _read_chain(file, str(path))
    if scale is not None:
        apply_scale(raw, lines, scale)
    apply_overrides(raw, lines, overrides)
    try:
        config = ExperimentConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(explain(err, ExperimentConfig, _locator(lines))) from None
    config.extends = str(parent) if parent is not None else None
    return config


__all__ = [
    "SCALES",
    "TINY_GLOBAL_BATCH",
    "TINY_STAGE_STEPS",
    "TINY_VALIDATION_SAMPLES",
    "apply_overrides",
    "apply_scale",
    "load_experiment",
    "read_yaml",
]
