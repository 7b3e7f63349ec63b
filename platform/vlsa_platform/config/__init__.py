"""Experiment files: the typed schema, the YAML loader (``extends``, ``--scale``, ``--set``) and its errors.

Read by every layer; imports neither torch nor ray.
"""

from .errors import ConfigError
from .loader import SCALES, load_experiment
from .schema import ExperimentConfig

__all__ = ["SCALES", "ConfigError", "ExperimentConfig", "load_experiment"]
