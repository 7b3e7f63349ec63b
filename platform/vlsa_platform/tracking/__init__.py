"""MLflow tracking (DESIGN.md §3, §4): rank 0 only, through one small interface.

- :mod:`.names`: the metric, param, tag and artifact names §4 fixes, and :func:`flatten_params`;
- :mod:`.store`: which tracking URI a submission uses, and :class:`LocalTrackingServer` for many writers;
- :mod:`.cost`: :class:`GpuHoursMeter` for ``cost/gpu_hours`` from the accelerator table;
- :mod:`.client`: :func:`mlflow_client`, the one MLflow client factory (bounded HTTP retries and timeout);
- :mod:`.tracker`: :class:`Tracker` (asynchronous, bounded, never blocks or fails training) and
  :class:`NullTracker` for the other ranks; :mod:`.sender` is its background sender, :mod:`.panels` its
  images (reconstruction panels);
- :mod:`.report`: ``vlsa-platform report`` — an experiment's child runs read back and compared (imported on
  its own: it needs matplotlib).

MLflow itself is imported on first use, so importing this package stays cheap.
"""

from . import names
from .client import mlflow_client
from .cost import GpuHoursMeter
from .names import flatten_params
from .panels import reconstruction_panel
from .sender import TrackerOptions
from .store import (
    LocalTrackingServer,
    TrackingServerError,
    TrackingStore,
    local_store,
    resolve_store,
    server_for,
    shared_store,
)
from .tracker import NullTracker, Tracker, TrackingError, git_commit, tracker_for_rank

__all__ = [
    "GpuHoursMeter",
    "LocalTrackingServer",
    "NullTracker",
    "Tracker",
    "TrackerOptions",
    "TrackingError",
    "TrackingServerError",
    "TrackingStore",
    "flatten_params",
    "git_commit",
    "local_store",
    "mlflow_client",
    "names",
    "reconstruction_panel",
    "resolve_store",
    "server_for",
    "shared_store",
    "tracker_for_rank",
]
