"""The experiment file's typed schema: one tree of pydantic models whose field docstrings are its reference.

An experiment file (``experiments/*.yaml``, see ``docs/experiments.md``) describes one submission: the model
variant, the data, the ordered training stages (paper §4.1) and, optionally, a sweep (Ray Tune) or an
ablation (one child run per Table 3 variant). Every mapping forbids unknown keys, so a typo is an error that
names the key and its line, never a silently ignored setting. Values left ``null`` are derived later (the
plan fills placement defaults; the accelerator table will fill the rest).

This module is the schema's face: it holds the root, :class:`ExperimentConfig`, and re-exports the whole tree,
so importers need only ``vlsa_platform.config.schema``. The sections live beside it, one module each:

- :mod:`.vocabulary` — shared names (parts, vision modes, metrics, LoRA targets), sampling rules, the base class;
- :mod:`.model_section` — ``model``; :mod:`.data_section` — ``data``;
- :mod:`.stage_section` — ``stages`` and ``loss`` (placement, learning rates, ``EffectiveLoss``);
- :mod:`.sweep_section` — ``sweep`` and ``ablation``; :mod:`.runtime_section` — ``cluster``, ``tracking``,
  ``storage``, ``training``.

Checks that span several sections (dataset names used by stages exist, ``recon`` needs the SA-Perceiver in
every variant, a stage trains at least one part in every variant, sweep keys name real fields...) live in the
validators here, so ``ExperimentConfig.model_validate(mapping)`` is the one entry point whoever builds a config
(the loader, an orchestration trial, a test). The schema imports no torch; the model side imports the part
names and LoRA targets from :mod:`.vocabulary`.
"""

from __future__ import annotations

import copy
from typing import Annotated, Any, Literal

from pydantic import Field, PrivateAttr, StringConstraints, ValidationError, model_validator

from .data_section import (
    CognitionConfig,
    DataConfig,
    DatasetConfig,
    MixtureEntry,
    ValidationCognition,
    ValidationSet,
)
from .errors import ConfigError, FieldIssue, Loc, dotted
from .evaluate_section import (
    EvaluateConfig,
    check_evaluate,
    check_evaluation_rungs,
    eval_metric_task,
    variant_evaluation_points,
)
from .explain import explain, problem
from .keys import KeyIssue, check_key, set_dotted, split_key
from .model_section import LoraConfig, ModelConfig, ModelWeights
from .runtime_section import (
    AcceleratorSpec,
    ClusterConfig,
    NonFiniteConfig,
    StorageConfig,
    TrackingConfig,
    TrainingConfig,
)
from .stage_section import (
    EffectiveLoss,
    LearningRates,
    LossDefaults,
    Placement,
    ScheduleConfig,
    StageConfig,
    StageLoss,
)
from .sweep_section import AblationConfig, Domain, SchedulerConfig, SweepConfig, VariantConfig
from .vocabulary import (
    LLAMA_LINEARS,
    METRICS,
    SYNTHETIC_DATASET,
    TRAINABLE_PARTS,
    Name,
    Section,
    Seed,
    derive_grad_accum,
    parse_sampling,
    parts_present,
    recon_needs_sa,
    sampled_size,
)


class ExperimentConfig(Section):
    """A whole experiment file, resolved (``extends`` merged, ``--scale``/``--set`` applied)."""

    name: Annotated[str, StringConstraints(min_length=1)]
    """MLflow experiment name."""
    description: str = ""
    """Free text (logged with the parent run)."""
    seed: Seed = 0
    """Base random seed (data sampling, cognition turns, initialisation of new modules)."""
    extends: str | None = Field(default=None, exclude=True)
    """Path of another experiment file (relative to this one) that this file is laid over: mappings merge
    recursively, lists and scalars replace. Applied by the loader; kept only as a record (absolute path)."""
    model: ModelConfig = Field(default_factory=ModelConfig)
    """The model variant."""
    data: DataConfig
    """Datasets and data processing."""
    loss: LossDefaults = Field(default_factory=LossDefaults)
    """Loss weights shared by the stages (a sweep can search ``loss.rec_weight`` for all stages at once)."""
    stages: dict[Name, StageConfig] = Field(min_length=1)
    """Training stages, run in the order written (paper: stage1, stage2, stage3)."""
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)
    """Planning information about the cluster."""
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    """MLflow settings."""
    storage: StorageConfig = Field(default_factory=StorageConfig)
    """Checkpoint and artifact storage."""
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    """Run-wide training behaviour: the divergence policy (``training.on_nonfinite``)."""
    sweep: SweepConfig | None = None
    """A hyper-parameter search (at most one of ``sweep`` and ``ablation``)."""
    ablation: AblationConfig | None = None
    """Ablation variants (at most one of ``sweep`` and ``ablation``)."""
    evaluate: EvaluateConfig | None = None
    """Benchmark evaluation (lmms-eval) after the run's last stage, or after each stage named; ``null`` = none."""

    _raw: dict[str, Any] = PrivateAttr(default_factory=dict)

    # -- validation ---------------------------------------------------------------------------------------

    @model_validator(mode="wrap")
    @classmethod
    def _keep_raw(cls, data: Any, handler: Any) -> ExperimentConfig:
        if isinstance(data, ExperimentConfig):
            return data
        raw = copy.deepcopy(data) if isinstance(data, dict) else {}
        config = handler(_named_mixtures(data))
        config._raw = raw
        if config.sweep is not None:
            _check_sweep_keys(raw, config)
        return config

    @model_validator(mode="after")
    def _cross_check(self) -> ExperimentConfig:
        names = set(self.data.datasets)

        def need(loc: Loc, name: str) -> None:
            if name not in names:
                raise FieldIssue(
                    loc, f"no dataset named {name!r} in data.datasets (has: {', '.join(sorted(names))})"
                )

        for mix_name, entries in self.data.mixtures.items():
            for i, entry in enumerate(entries):
                need(("data", "mixtures", mix_name, i, "dataset"), entry.dataset)
        cognition_stages = self.data.cognition.stages or []
        for i, stage_name in enumerate(cognition_stages):
            if stage_name not in self.stages:
                raise FieldIssue(
                    ("data", "cognition", "stages", i),
                    f"no stage named {stage_name!r} (stages: {', '.join(self.stages)})",
                )
        if self.data.validation is not None:
            need(("data", "validation", "dataset"), self.data.validation.dataset)
        for stage_name, stage in self.stages.items():
            for i, entry in enumerate(stage.mixture):
                need(("stages", stage_name, "mixture", i, "dataset"), entry.dataset)
            loss = stage.loss
            loss.llm_weight = self.loss.llm_weight if loss.llm_weight is None else loss.llm_weight
            loss.rec_weight = self.loss.rec_weight if loss.rec_weight is None else loss.rec_weight
            loss.schedule = self.loss.schedule.model_copy() if loss.schedule is None else loss.schedule

        if self.sweep is not None and self.ablation is not None:
            raise FieldIssue(("ablation",), "a file has at most one of sweep and ablation")
        if self.sweep is not None and self.sweep.metric.startswith("val/") and self.data.validation is None:
            raise FieldIssue(
                ("sweep", "metric"), f"{self.sweep.metric} needs validation data (data.validation)"
            )
        check_evaluate(self.evaluate, list(self.stages), self.sweep.metric if self.sweep else None)

        self._check_variant_stages()
        for where, switches in self._variant_switches():
            vision, recon = switches["vision"], switches["recon"]
            if recon and vision != "sa_perceiver":
                raise FieldIssue((*where, "recon"), recon_needs_sa(vision), related=((*where, "vision"),))
            present = parts_present(vision, recon)
            label = f" in variant {where[-1]}" if where else ""
            for stage_name in self._variant_stages(where):
                stage = self.stages[stage_name]
                if not any(p in present for p in stage.trainable):
                    raise FieldIssue(
                        ("stages", stage_name, "trainable"),
                        f"trains nothing{label}: {', '.join(stage.trainable)} are absent with vision "
                        f"{vision} and recon {'on' if recon else 'off'}",
                    )
                loss = stage.loss.effective(recon)
                if loss.llm_weight == 0 and loss.rec_weight == 0:
                    raise FieldIssue(("stages", stage_name, "loss"), f"both loss weights are 0{label}")
        _check_validation_tokens(self)
        return self

    @model_validator(mode="after")
    def _check_variant_configs(self) -> ExperimentConfig:
        # After the cross-checks (which name the variant in a stage's own field), and after ``_keep_raw`` has
        # kept the mapping each variant's config is made from.
        if self.ablation is not None:
            _check_variants(self._raw, self)
        return self

    def _variant_switches(self) -> list[tuple[Loc, dict[str, Any]]]:
        base = {"vision": self.model.vision, "recon": self.model.recon, "cognition": self.model.cognition}
        if self.ablation is None:
            return [((), base)]
        return [
            (("ablation", "variants", name), {**base, **variant.switches()})
            for name, variant in self.ablation.variants.items()
        ]

    def _variant_stages(self, where: Loc) -> list[str]:
        """The stages the variant at ``where`` (``()`` = the file's one run) trains, in the file's order."""
        chosen = self.ablation.variants[str(where[-1])].stages if where and self.ablation else None
        return list(self.stages) if chosen is None else [name for name in self.stages if name in chosen]

    def _check_variant_stages(self) -> None:
        """Each variant's ``stages`` names stages of the file, in the file's order."""
        order = list(self.stages)
        for name, variant in (self.ablation.variants if self.ablation else {}).items():
            for i, stage_name in enumerate(variant.stages or []):
                if stage_name not in order:
                    raise FieldIssue(
                        ("ablation", "variants", name, "stages", i),
                        f"no stage named {stage_name!r} (stages: {', '.join(order)})",
                    )
            if variant.stages is not None and variant.stages != sorted(variant.stages, key=order.index):
                raise FieldIssue(
                    ("ablation", "variants", name, "stages"),
                    f"runs in the file's order: write [{', '.join(sorted(variant.stages, key=order.index))}]",
                )

    # -- use ----------------------------------------------------------------------------------------------

    @property
    def kind(self) -> Literal["single", "ablation", "sweep"]:
        """``sweep``, ``ablation`` or ``single`` (one run)."""
        if self.sweep is not None:
            return "sweep"
        if self.ablation is not None:
            return "ablation"
        return "single"

    @property
    def raw(self) -> dict[str, Any]:
        """A copy of the mapping this config was validated from (before defaults and derived values)."""
        return copy.deepcopy(self._raw or self.model_dump(mode="json"))

    def with_values(self, values: dict[str, Any], *, origin: str = "override") -> ExperimentConfig:
        """A new config with dotted keys set (a sweep trial's sample, an ablation variant's switches).

        Applied to :attr:`raw`, so a shared key (``loss.rec_weight``) still reaches every stage that does not
        set its own. Raises :class:`ConfigError` naming ``origin`` for an unknown key or a bad value.
        """
        raw = self.raw
        for key, value in values.items():
            try:
                loc = split_key(key)
                check_key(ExperimentConfig, raw, loc)
            except KeyIssue as issue:
                raise ConfigError(f"{origin}: {issue.message}") from None
            set_dotted(raw, loc, value)
        try:
            return ExperimentConfig.model_validate(raw)
        except ValidationError as err:
            raise ConfigError(explain(err, ExperimentConfig, lambda _loc: origin)) from None

    def variant(self, name: str) -> ExperimentConfig:
        """The single-run config of ablation variant ``name``: its switches applied, only its ``stages`` kept,
        then its ``set`` keys applied; ``ablation`` removed."""
        if self.ablation is None or name not in self.ablation.variants:
            raise KeyError(name)
        origin = f"ablation variant {name}"
        try:
            raw = _variant_raw(self.raw, name, self.ablation.variants[name])
            return ExperimentConfig.model_validate(raw)
        except FieldIssue as issue:
            raise ConfigError(f"{origin}: {dotted(issue.path)}: {issue.message}") from None
        except ValidationError as err:
            raise ConfigError(explain(err, ExperimentConfig, lambda _loc: origin)) from None

    def trial(self, values: dict[str, Any], trial_id: str = "trial") -> ExperimentConfig:
        """The single-run config of one sweep trial: ``values`` (dotted key -> sampled value) applied, ``sweep``
        removed."""
        if self.sweep is None:
            raise ValueError("not a sweep")
        return self.with_values({**values, "sweep": None}, origin=trial_id)

    def resolved(self) -> dict[str, Any]:
        """The resolved config as plain JSON-able data (what is logged as ``config/resolved.yaml``)."""
        return self.model_dump(mode="json")

    def stage_loss(self, stage: str) -> EffectiveLoss:
        """Stage ``stage``'s loss as training applies it (``w_rec`` 0 without ``model.recon``)."""
        return self.stages[stage].loss.effective(self.model.recon)

    def cognition_applies(self, stage: str) -> bool:
        """Whether stage ``stage``'s training data gets cognition turns: ``model.cognition`` on and the stage
        among ``data.cognition.stages`` (default: the last stage) — the one place that rule is written."""
        if not self.model.cognition:
            return False
        chosen = self.data.cognition.stages
        return stage in chosen if chosen is not None else stage == list(self.stages)[-1]

    def stage_inputs(self, stage: str) -> dict[str, Any]:
        """What stage ``stage`` trains on besides the weights its earlier stages leave, as JSON-able data: its
        place, its own section (its loss as training applies it, ``EffectiveLoss.as_applied``), ``model``, ``seed``
        and the ``data`` it reads — the datasets its mixture and the validation name, ``data.cognition``
        only where :meth:`cognition_applies` (its ``vq_format`` always: special tokens grow the model), not
        ``data.mixtures`` (a stage's ``mixture`` holds its copy). Runs whose first k stages have equal inputs
        train those k stages alike; the first stage whose inputs two values of a sweep key set apart is where
        that key acts (``sweep.scheduler.rungs``). The one definition of a stage's inputs."""
        section = self.stages[stage].model_dump(mode="json")
        section["loss"] = self.stage_loss(stage).as_applied()
        data = self.data.model_dump(mode="json", exclude={"mixtures", "cognition", "datasets"})
        read = {entry.dataset for entry in self.stages[stage].mixture}
        if self.data.validation is not None:
            read.add(self.data.validation.dataset)
        data["datasets"] = {name: self.data.datasets[name].model_dump(mode="json") for name in sorted(read)}
        cognition = self.data.cognition
        applies = self.cognition_applies(stage)
        data["cognition"] = (
            cognition.model_dump(mode="json") if applies else {"vq_format": cognition.vq_format}
        )
        return {
            "stage": stage,
            "index": list(self.stages).index(stage),
            "section": section,
            "model": self.model.model_dump(mode="json"),
            "seed": self.seed,
            "data": data,
        }


def _check_validation_tokens(config: ExperimentConfig) -> None:
    """VQ answers written as ``<vq_i>`` tokens in validation (the one set every run is measured on) need those
    tokens in every run of the file."""
    validation = config.data.validation
    if validation is None or validation.cognition.vq_format != "special" or validation.cognition.p_vq == 0:
        return
    for where, switches in config._variant_switches():
        if not (switches["cognition"] and config.data.cognition.vq_format == "special"):
            label = f" (variant {where[-1]})" if where else ""
            raise FieldIssue(
                ("data", "validation", "cognition", "vq_format"),
                f"special: a run{label} without the <vq_i> tokens (model.cognition off or data.cognition."
                "vq_format text) cannot read the validation's VQ answers; use text",
            )


def _named_mixtures(data: Any) -> Any:
    """Replace ``stages.X.mixture: NAME`` with a copy of ``data.mixtures.NAME``."""
    if not isinstance(data, dict) or not isinstance(data.get("stages"), dict):
        return data
    mixtures = data.get("data", {}).get("mixtures") if isinstance(data.get("data"), dict) else None
    mixtures = mixtures if isinstance(mixtures, dict) else {}
    stages = {}
    for stage_name, stage in data["stages"].items():
        if isinstance(stage, dict) and isinstance(stage.get("mixture"), str):
            chosen = stage["mixture"]
            if chosen not in mixtures:
                known = ", ".join(mixtures) or "none defined"
                raise FieldIssue(
                    ("stages", stage_name, "mixture"),
                    f"no mixture named {chosen!r} in data.mixtures ({known})",
                )
            stage = {**stage, "mixture": copy.deepcopy(mixtures[chosen])}
        stages[stage_name] = stage
    return {**data, "stages": stages}


def _variant_raw(raw: dict[str, Any], name: str, variant: VariantConfig) -> dict[str, Any]:
    """The raw mapping of ablation variant ``name``: switches set, stages chosen, ``set`` applied, ``ablation``
    dropped. A ``set`` key that names no field (or a stage the variant leaves out) is a :class:`FieldIssue` at
    that key of the variant."""
    raw = {k: v for k, v in copy.deepcopy(raw).items() if k != "ablation"}
    for key, value in variant.switches().items():
        set_dotted(raw, ("model", key), value)
    stages = raw.get("stages")
    if variant.stages is not None and isinstance(stages, dict):
        raw["stages"] = {k: v for k, v in stages.items() if k in variant.stages}
        variant_evaluation_points(raw, name)
    for key, value in variant.set.items():
        where: Loc = ("ablation", "variants", name, "set", key)
        try:
            loc = split_key(key)
            left_out = loc[0] == "stages" and len(loc) > 1 and loc[1] in (stages or {})
            if left_out and loc[1] not in raw["stages"]:
                kept = ", ".join(raw["stages"])
                raise KeyIssue(loc[:2], f"{loc[1]} is not among this variant's stages ({kept})")
            check_key(ExperimentConfig, raw, loc)
        except KeyIssue as issue:
            raise FieldIssue(where, issue.message) from None
        set_dotted(raw, loc, value)
    return raw


def _check_variants(raw: dict[str, Any], config: ExperimentConfig) -> None:
    """Every ablation variant gives a good run config: its ``set`` keys name fields and take their values, and
    what its stage list leaves (``data.cognition.stages``...) still holds. Blamed on the variant's field."""
    assert config.ablation is not None
    for name, variant in config.ablation.variants.items():
        try:
            ExperimentConfig.model_validate(_variant_raw(raw, name, variant))
        except ValidationError as err:
            bad_loc, message = problem(err.errors()[0], ExperimentConfig)
            blame: Loc = ("stages",) if variant.stages is not None else ()
            for key in variant.set:
                if bad_loc[: len(split_key(key))] == split_key(key):
                    blame = ("set", key)
            raise FieldIssue(
                ("ablation", "variants", name, *blame),
                f"gives variant {name} a bad config: {dotted(bad_loc)}: {message}",
            ) from None


def _check_sweep_keys(raw: dict[str, Any], config: ExperimentConfig) -> None:
    """Every search-space key must name a field of the config, accept the domain's values and change a run;
    ASHA's rungs must fall where every key has acted (:func:`_check_rungs`)."""
    assert config.sweep is not None
    base = {k: v for k, v in raw.items() if k != "sweep"}
    acts: dict[str, int] = {}
    for key, domain in config.sweep.search_space.items():
        where: Loc = ("sweep", "search_space", key)
        try:
            loc = split_key(key)
            check_key(ExperimentConfig, base, loc)
        except KeyIssue as issue:
            raise FieldIssue(where, issue.message) from None
        # Every value is validated (the plan builds one config per trial; a bad third grid value must be
        # refused here, at its line, not when the plan is built); the first two distinct ones also probe the
        # key's effect.
        outcomes, probes, distinct = [], [], []
        for at, value in domain.indexed_values():
            trial = copy.deepcopy(base)
            set_dotted(trial, loc, value)
            try:
                checked = ExperimentConfig.model_validate(trial)
            except ValidationError as err:
                bad_loc, message = problem(err.errors()[0], ExperimentConfig)
                raise FieldIssue(
                    (*where, *at), f"{key} = {value!r} gives a bad config: {dotted(bad_loc)}: {message}"
                ) from None
            if value not in distinct and len(distinct) < 2:
                distinct.append(value)
                probes.append(checked)
                outcomes.append(checked.model_dump(mode="json", exclude={"loss"}))
        if len(outcomes) == 2 and outcomes[0] == outcomes[1]:
            raise FieldIssue(
                where,
                f"{key} has no effect on any run (e.g. every stage sets its own value); search the per-stage keys",
            )
        if len(probes) == 2:
            apart = [i for i, name in enumerate(config.stages) if _differ(probes, name)]
            if apart:
                acts[key] = apart[0]
    _check_rungs(config, acts)


def _differ(probes: list[ExperimentConfig], stage: str) -> bool:
    return probes[0].stage_inputs(stage) != probes[1].stage_inputs(stage)


def _check_rungs(config: ExperimentConfig, acts: dict[str, int]) -> None:
    """ASHA compares trials only from a stage where every search-space key has acted (``acts``: key -> index
    of the first stage whose inputs two of its values set apart) and, for ``val/loss_llm`` unless
    ``allow_frozen_llm``, after the last stage that trains no LLM: ``sweep.scheduler.rungs.from_stage`` is
    checked against that, or (``null``) set to the earliest such stage."""
    assert config.sweep is not None
    scheduler, metric = config.sweep.scheduler, config.sweep.metric
    rungs, stages = scheduler.rungs, list(config.stages)
    where: Loc = ("sweep", "scheduler", "rungs", "from_stage")
    if rungs.from_stage is not None and rungs.from_stage not in stages:
        raise FieldIssue(where, f"no stage named {rungs.from_stage!r} (stages: {', '.join(stages)})")
    if scheduler.kind != "asha":
        return
    frozen = []
    if metric == "val/loss_llm" and not rungs.allow_frozen_llm:
        trains_llm = [bool({"llm", "all"} & set(config.stages[name].trainable)) for name in stages]
        frozen = [i for i, trains in enumerate(trains_llm) if not trains]
    earliest = max([0, *acts.values(), *(i + 1 for i in frozen)])
    if eval_metric_task(metric) is not None:
        if config.evaluate is None:
            check_evaluate(config.evaluate, stages, metric)  # refuses: an eval/ metric needs the section
            return
        start = rungs.from_stage or (stages[earliest] if earliest < len(stages) else None)
        check_evaluation_rungs(config.evaluate, stages, start, metric)
    if rungs.from_stage is None:
        if earliest >= len(stages):
            raise FieldIssue(
                ("sweep", "scheduler", "rungs"),
                f"no stage where ASHA may compare trials on {metric}: the last stage, {stages[-1]}, trains "
                "no LLM; use kind: fifo, or rungs.allow_frozen_llm: true on purpose",
            )
        rungs.from_stage = stages[earliest]
        return
    start = stages.index(rungs.from_stage)
    late = [key for key, index in acts.items() if index > start]
    if late:
        key = max(late, key=lambda k: acts[k])
        raise FieldIssue(
            where,
            f"{rungs.from_stage} comes before {key} acts (first in {stages[acts[key]]}): a rung there would "
            f"compare trials that do not yet differ by it; rungs from {stages[earliest]} on",
            related=(("sweep", "search_space", key),),
        )
    frozen_after = [i for i in frozen if i >= start]
    if frozen_after:
        name = stages[frozen_after[0]]
        later = f"from_stage: {stages[earliest]}, or " if earliest < len(stages) else ""
        raise FieldIssue(
            where,
            f"{name} trains no LLM (trainable: {', '.join(config.stages[name].trainable)}): a rung there "
            f"would rank trials by {metric} while the LLM is frozen; {later}rungs.allow_frozen_llm: true on "
            "purpose",
            related=(("stages", name, "trainable"),),
        )


__all__ = [
    "LLAMA_LINEARS",
    "METRICS",
    "SYNTHETIC_DATASET",
    "TRAINABLE_PARTS",
    "AblationConfig",
    "AcceleratorSpec",
    "ClusterConfig",
    "CognitionConfig",
    "DataConfig",
    "DatasetConfig",
    "Domain",
    "EffectiveLoss",
    "EvaluateConfig",
    "ExperimentConfig",
    "LearningRates",
    "LoraConfig",
    "LossDefaults",
    "MixtureEntry",
    "ModelConfig",
    "ModelWeights",
    "NonFiniteConfig",
    "Placement",
    "ScheduleConfig",
    "SchedulerConfig",
    "StageConfig",
    "StageLoss",
    "StorageConfig",
    "SweepConfig",
    "TrackingConfig",
    "TrainingConfig",
    "ValidationCognition",
    "ValidationSet",
    "VariantConfig",
    "derive_grad_accum",
    "parse_sampling",
    "parts_present",
    "sampled_size",
]
