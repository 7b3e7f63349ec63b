"""Orchestration: an experiment planned (``plan``, no Ray) and run as a submission on Ray Tune / Train.

- :mod:`.plan`: the plan of an experiment (runs, stages, placements); :mod:`.sweep`: Tune's search space and
  searcher, and what each trial trains; :mod:`.decisions`: ASHA and its decisions, scheduler to workers;
- :mod:`.training`: one run's stages on Ray Train; :mod:`.targets`: the frozen-target cache filled with Ray Data;
- :mod:`.submission_types`: a submission and its outcome as data; :mod:`.submission`: its Tune experiment under
  one MLflow parent run; :mod:`.progress`: what trials tell Tune and the submission tells its user;
- :mod:`.ledger`: the submissions recorded in the work directory; :mod:`.local`: the local driver (embedded
  Ray); :mod:`.remote`, :mod:`.jobs`, :mod:`.jobs_api`: a submission as a Ray job on a cluster, whose driver is
  :mod:`.entry`.

This ``__init__`` imports nothing, so that planning (``vlsa-platform validate``) never loads Ray.
"""
