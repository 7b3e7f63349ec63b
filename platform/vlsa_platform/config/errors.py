"""Errors of the experiment-file layer: every one ends up as a single readable message, never a traceback.

The message format is one line per problem, ``WHERE: FIELD: WHAT`` — ``WHERE`` is ``file.yaml:LINE`` (or
``--set key=value`` / ``--scale tiny`` when the value came from the command line), ``FIELD`` the dotted path
of the offending key in the resolved config, e.g.::

    experiments/x.yaml:12: stages.stage2.loss.rec_weight: Input should be a valid number (got 'abc')
"""

from __future__ import annotations

from collections.abc import Sequence

Loc = tuple[str | int, ...]


class ConfigError(Exception):
    """A bad experiment file, ``extends`` chain, ``--set`` override or ``--scale``; ``str()`` is the message.

    ``problems`` holds one line per problem; the CLI prints them to stderr and exits with status 2.
    """

    def __init__(self, problems: str | Sequence[str]):
        self.problems: list[str] = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class FieldIssue(ValueError):
    """Raised inside schema validators to blame a specific field below the model being validated.

    Pydantic reports a validator's ``ValueError`` at the model's own location; the loader finds this exception
    in the error's context and appends ``path`` to that location, so the message names the exact key (and
    its line in the file) rather than the enclosing mapping. ``related`` names other fields (same base) that
    take part in the conflict; the message then also says where those were set.
    """

    def __init__(self, path: Loc, message: str, related: tuple[Loc, ...] = ()):
        self.path: Loc = tuple(path)
        self.message = message
        self.related: tuple[Loc, ...] = tuple(tuple(r) for r in related)
        super().__init__(message)


def dotted(loc: Loc) -> str:
    """``('stages', 'stage1', 'mixture', 0, 'dataset')`` -> ``stages.stage1.mixture.0.dataset``.

    Keys that contain a dot themselves (sweep keys such as ``loss.rec_weight``) are shown quoted in brackets:
    ``sweep.search_space["loss.rec_weight"]``.
    """
    out = ""
    for part in loc:
        text = str(part)
        if "." in text:
            out += f'["{text}"]'
        else:
            out += f".{text}" if out else text
    return out or "(top level)"


__all__ = ["ConfigError", "FieldIssue", "Loc", "dotted"]
