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
  ``storage``.

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

from .data_section import CognitionConfig, DataConfig, DatasetConfig, MixtureEntry, ValidationSet
from .errors import ConfigError, FieldIssue, Loc, dotted
from .explain import explain, problem
from .keys import KeyIssue, check_key, set_dotted, split_key
from .model_section import LoraConfig, ModelConfig, ModelWeights
from .runtime_section import AcceleratorSpec, ClusterConfig, StorageConfig, TrackingConfig
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
    seed: int = 0
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
    sweep: SweepConfig | None = None
    """A hyper-parameter search (at most one of ``sweep`` and ``ablation``)."""
    ablation: AblationConfig | None = None
    """Ablation variants (at most one of ``sweep`` and ``ablation``)."""

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

        for where, switches in self._variant_switches():
            vision, recon = switches["vision"], switches["recon"]
            if recon and vision != "sa_perceiver":
                raise FieldIssue((*where, "recon"), recon_needs_sa(vision), related=((*where, "vision"),))
            present = parts_present(vision, recon)
            label = f" in variant {where[-1]}" if where else ""
            for stage_name, stage in self.stages.items():
                if not any(p in present for p in stage.trainable):
                    raise FieldIssue(
                        ("stages", stage_name, "trainable"),
                        f"trains nothing{label}: {', '.join(stage.trainable)} are absent with vision "
                        f"{vision} and recon {'on' if recon else 'off'}",
                    )
                loss = stage.loss.effective(recon)
                if loss.llm_weight == 0 and loss.rec_weight == 0:
                    raise FieldIssue(("stages", stage_name, "loss"), f"both loss weights are 0{label}")
        return self

    def _variant_switches(self) -> list[tuple[Loc, dict[str, Any]]]:
        base = {"vision": self.model.vision, "recon": self.model.recon, "cognition": self.model.cognition}
        if self.ablation is None:
            return [((), base)]
        return [
            (("ablation", "variants", name), {**base, **variant.switches()})
            for name, variant in self.ablation.variants.items()
        ]

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
        """The single-run config of ablation variant ``name`` (its switches applied, ``ablation`` removed)."""
        if self.ablation is None or name not in self.ablation.variants:
            raise KeyError(name)
        switches = {f"model.{k}": v for k, v in self.ablation.variants[name].switches().items()}
        return self.with_values({**switches, "ablation": None}, origin=f"ablation variant {name}")

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


def _check_sweep_keys(raw: dict[str, Any], config: ExperimentConfig) -> None:
    """Every search-space key must name a field of the config, accept the domain's values and change a run."""
    assert config.sweep is not None
    base = {k: v for k, v in raw.items() if k != "sweep"}
    for key, domain in config.sweep.search_space.items():
        where: Loc = ("sweep", "search_space", key)
        try:
            loc = split_key(key)
            check_key(ExperimentConfig, base, loc)
        except KeyIssue as issue:
            raise FieldIssue(where, issue.message) from None
        outcomes = []
        for value in domain.probe_values():
            trial = copy.deepcopy(base)
            set_dotted(trial, loc, value)
            try:
                resolved = ExperimentConfig.model_validate(trial).model_dump(mode="json", exclude={"loss"})
            except ValidationError as err:
                bad_loc, message = problem(err.errors()[0], ExperimentConfig)
                raise FieldIssue(
                    where, f"{key} = {value!r} gives a bad config: {dotted(bad_loc)}: {message}"
                ) from None
            outcomes.append(resolved)
        if len(outcomes) == 2 and outcomes[0] == outcomes[1]:
            raise FieldIssue(
                where,
                f"{key} has no effect on any run (e.g. every stage sets its own value); search the per-stage keys",
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
    "ExperimentConfig",
    "LearningRates",
    "LoraConfig",
    "LossDefaults",
    "MixtureEntry",
    "ModelConfig",
    "ModelWeights",
    "Placement",
    "ScheduleConfig",
    "SchedulerConfig",
    "StageConfig",
    "StageLoss",
    "StorageConfig",
    "SweepConfig",
    "TrackingConfig",
    "ValidationSet",
    "VariantConfig",
    "derive_grad_accum",
    "parse_sampling",
    "parts_present",
    "sampled_size",
]
