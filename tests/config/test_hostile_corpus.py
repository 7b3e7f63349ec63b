"""The hostile corpus (``hostile_corpus.py``) through ``vlsa-platform validate``: every case exits 2, names the
field (or the ``--set`` item) and ``file:LINE`` where it has one, and prints no traceback.

Sampled to stay fast (the whole corpus, about 1,350 cases, each as its own process, is
``benchmarks/hostile_input.py``, which also measures time and memory): every structural case (syntax,
truncation, raw bytes, size, aliases, nesting, ``extends``, python tags) of every shipped file; the odd ``--set``
items on ``vlsa_paper.yaml`` only (they read the same keys through every file); the unknown key at every
mapping level of every file; every wrong-type and bad-number case of :data:`FULL_LEAVES`, and every
:data:`STRIDE`-th one of the other files (plus :data:`ALWAYS`). In process (``cli.main``, as the console script calls it), plus three
cases as a real ``python -m vlsa_platform.cli`` process.
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

import pytest

from vlsa_platform.cli import main

from .hostile_corpus import Case, corpus, leaves, problems, shipped, tree_cases, walk

#: The file whose every leaf is mutated in the test (a sweep over ``vlsa_paper.yaml``: leaves of its own,
#: grid values checked against the fields they set, and the chain's inherited keys).
FULL_LEAVES = "stage_mixing_sweep"

#: One leaf case in this many, for the other files.
STRIDE = 10

#: The file whose ``--set`` cases run in the test.
SET_FILE = "vlsa_paper"

#: Leaf cases always run: the bugs this corpus found (a bad third grid value refused only when the plan was
#: built, without file or line; a float past float32 accepted).
ALWAYS = (
    'loss_ratio_sweep/wrong-type/sweep.search_space["loss.rec_weight"].grid.2=string',
    'loss_ratio_sweep/bad-number/sweep.search_space["loss.rec_weight"].grid.3=10**40',
    "vlsa_paper/bad-number/stages.stage1.lr.default=10**40",
)

#: Cases run as a real process too.
IN_A_PROCESS = (
    "vlsa_paper/alias/bomb",
    "ablation/python-tag/name=object-apply",
    "cognition_sweep/set/value-deep",
)

CORPUS = corpus()


def _sampled(cases: list[Case]) -> list[Case]:
    out = []
    leaf_cases: Counter[str] = Counter()
    for case in cases:
        stem = case.id.split("/")[0]
        if case.kind == "set":
            keep = stem == SET_FILE
        elif case.kind in ("wrong-type", "bad-number"):
            keep = stem == FULL_LEAVES or leaf_cases[stem] % STRIDE == 0 or case.id in ALWAYS
            leaf_cases[stem] += 1
        else:
            keep = True
        if keep:
            out.append(case)
    return out


SAMPLED = _sampled(CORPUS)


def test_corpus_covers_every_file_every_mapping_and_every_leaf():
    files = shipped()
    assert {f.name for f in files} >= {"vlsa_paper.yaml", "ablation.yaml", "stage_mixing_sweep.yaml"}
    kinds = {"syntax", "truncation", "raw-bytes", "oversized", "alias", "deep-nesting", "extends"}
    kinds |= {"python-tag", "set", "unknown-key", "wrong-type", "bad-number"}
    for f in files:
        mine = [case for case in CORPUS if case.id.startswith(f"{f.stem}/")]
        assert {case.kind for case in mine} >= kinds - ({"bad-number"} if f.stem == "ablation" else set())
        tree = list(tree_cases(f))
        leaf_count = len(leaves(f.data))
        assert sum(case.kind == "wrong-type" for case in tree) >= 2 * leaf_count > 0
        mappings = sum(isinstance(value, dict) for _, value in walk(f.data))
        assert sum(case.kind == "unknown-key" for case in tree) == mappings
    assert len(CORPUS) == len({case.id for case in CORPUS})  # ids name the cases in the benchmark's table
    assert {case.id for case in SAMPLED} >= set(ALWAYS)


@pytest.mark.parametrize("case", SAMPLED, ids=lambda case: case.id)
def test_refused_with_the_field_and_place_named(case, tmp_path, capsys):
    status = main(case.write(tmp_path))
    captured = capsys.readouterr()
    found = problems(case, status, captured.out + captured.err)
    assert not found, f"{case.id}: {'; '.join(found)}\n--- stderr:\n{captured.err[:2000]}"


@pytest.mark.parametrize("case_id", IN_A_PROCESS)
def test_refused_by_the_process(case_id, tmp_path):
    (case,) = [case for case in CORPUS if case.id == case_id]
    result = subprocess.run(
        [sys.executable, "-m", "vlsa_platform.cli", *case.write(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    found = problems(case, result.returncode, result.stdout + result.stderr)
    assert not found, f"{case.id}: {'; '.join(found)}\n--- stderr:\n{result.stderr[:2000]}"
