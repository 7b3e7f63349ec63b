"""The VLSA model's registration with lmms-eval: the entry point ``vlsa`` of the group ``lmms_eval.models``
(``pyproject.toml``) names :data:`MANIFEST`. lmms-eval reads every entry point of the group when it starts and
imports the model's module only when the model is asked for (``--model vlsa``), so this module stays light."""

from __future__ import annotations

from lmms_eval.models.registry_v2 import ModelManifest

#: ``--model vlsa``: :class:`vlsa_platform.lmms.model.VLSA`, a "simple" model (contexts and ``doc_to_visual``).
MANIFEST = ModelManifest(model_id="vlsa", simple_class_path="vlsa_platform.lmms.model.VLSA")

__all__ = ["MANIFEST"]
