"""MLflow glue: one sqlite store per profile, ``results/<profile>/mlflow.db``, experiment ``pgd-<profile>``.

Training logs through :class:`PGDMLflowVisBackend`, mmengine's ``MLflowVisBackend`` with two changes (config from
:func:`mlflow_vis_backend`): params (the flattened resolved config); of the logger's scalars only the meaningful ones
(losses and ``lr``, not ``iter`` / ``time`` / ``data_time`` / ``memory`` nor ``base_lr``, which repeats ``lr``); and at
the end ``config.py`` and the text log as one ``train.log`` artifact (every training process's, in order, instead of
mmengine's ``<timestamp>/<timestamp>.log``). Each run carries a description (``mlflow.note.content``: its matrix
row and the table cells it fills). Evaluation adds final metrics and files to the same run, found by name
(:func:`log_eval_metrics`).

The experiment is tagged ``mlflow.experimentKind = custom_model_development``: MLflow 3's UI then opens it on its
list of training runs rather than on the GenAI overview ("Traces: No data").

Concurrency. Several trainings (Snakemake jobs, SLURM tasks on other nodes) share one sqlite file. Two things in
MLflow are not safe under that:

* creating the schema and running its migrations: MLflow serialises this with a lock under the *local* temporary
  directory, which does not reach across cluster nodes;
* ``MLflowVisBackend`` creates a missing experiment with check-then-create, so two first runs race and one fails.

Both happen here, once, under an ``fcntl`` lock on a file beside the DB (:func:`prepare_tracking`); by the time a
backend starts, schema and experiment exist. Ordinary writes then only contend for sqlite's write lock, which MLflow
waits out (``busy_timeout`` 20 s per database connection); the calls made here are retried on top of that when sqlite still
reports "database is locked". WAL journalling is deliberately not switched on: it does not work on network file
systems, where a cluster's results directory usually lives.
"""
from __future__ import annotations

import fcntl
import math
import numbers
import os
import random
import re
import time
from collections.abc import Callable, Iterable, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

__all__ = ["DB_NAME", "tracking_uri", "experiment_name", "prepare_tracking", "mlflow_vis_backend",
           "find_run", "log_eval_metrics", "log_run", "run_description", "PGDMLflowVisBackend", "ui_url",
           "mlflow_server"]

DB_NAME = "mlflow.db"
LOCK_NAME = ".mlflow.lock"
ARTIFACT_DIR = "mlartifacts"
# Files of the run directory uploaded when training ends: the dumped config and the text log.
DEFAULT_ARTIFACT_SUFFIX = (".py", ".log")
TRAIN_LOG = "train.log"
BACKEND_TYPE = "PGDMLflowVisBackend"
MLFLOW_BACKEND_TYPES = (BACKEND_TYPE, "MLflowVisBackend")
# MLflow 3's UI opens an experiment of this kind on its training runs (not on the GenAI traces overview)
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}
NOTE_TAG = "mlflow.note.content"
# logger scalars that are bookkeeping, not measurements (base_lr repeats lr)
NOT_METRICS = frozenset({"iter", "epoch", "step", "time", "data_time", "memory", "base_lr"})

_PROFILE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
T = TypeVar("T")


def tracking_uri(results_dir: str | os.PathLike) -> str:
    """``sqlite:///<absolute results_dir>/mlflow.db`` (sqlite: MLflow 3 refuses the plain file store)."""
    return f"sqlite:///{Path(results_dir).resolve() / DB_NAME}"


def experiment_name(profile: str) -> str:
    if not isinstance(profile, str) or not _PROFILE_RE.match(profile):
        raise ValueError(f"profile must be a plain name such as 'mini' or 'paper', got {profile!r}")
    return f"pgd-{profile}"


@contextmanager
def _store_lock(results_dir: Path):
    """Exclusive ``fcntl`` lock on ``<results_dir>/.mlflow.lock`` (POSIX locks also hold across NFS clients)."""
    with open(results_dir / LOCK_NAME, "a") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _is_locked_error(err: BaseException) -> bool:
    while err is not None:
        if "database is locked" in str(err):
            return True
        err = err.__cause__ or err.__context__
    return False


def _retry(fn: Callable[..., T], *args: Any, attempts: int = 8, delay: float = 0.25, **kwargs: Any) -> T:
    """Call ``fn``; on sqlite's "database is locked" wait (exponential backoff with jitter) and try again."""
    for attempt in range(attempts):
        try:
            return fn(*args, **kwargs)
        except Exception as err:  # MLflow wraps sqlite's OperationalError in its own exceptions
            if attempt == attempts - 1 or not _is_locked_error(err):
                raise
            time.sleep(delay * 2 ** attempt * (0.5 + random.random()))
    raise AssertionError("unreachable")


def _client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def prepare_tracking(results_dir: str | os.PathLike, profile: str) -> str:
    """Create the store (schema, migrations) and the profile's experiment if missing; return the experiment id.

    Safe to call from many processes at once. The experiment's artifacts go to ``<results_dir>/mlartifacts``
    rather than MLflow's default, a ``mlruns`` folder under whatever the working directory happens to be.
    """
    results = Path(results_dir).resolve()
    results.mkdir(parents=True, exist_ok=True)
    name = experiment_name(profile)
    with _store_lock(results):
        client = _retry(_client, tracking_uri(results))  # first use of the URI creates and migrates the schema
        exp = _retry(client.get_experiment_by_name, name)
        if exp is not None:
            if exp.lifecycle_stage != "active":
                raise RuntimeError(f"experiment {name!r} in {results / DB_NAME} is deleted; restore it "
                                   f"(mlflow experiments restore) or remove the database")
            for key, value in EXPERIMENT_TAGS.items():      # stores made before the tag was set
                if exp.tags.get(key) != value:
                    _retry(client.set_experiment_tag, exp.experiment_id, key, value)
            return exp.experiment_id
        artifacts = (results / ARTIFACT_DIR).as_uri()
        return _retry(client.create_experiment, name, artifact_location=artifacts, tags=EXPERIMENT_TAGS)


def run_description(run_name: str, matrix=None) -> str:
    """Markdown for the run page's description: the matrix row behind ``run_name`` (``<id>`` or ``<id>_s<seed>``)
    and the table cells its metrics fill; a run outside the matrix says so."""
    from pgd.matrix import MatrixError, load_matrix

    try:
        inst = (matrix if matrix is not None else load_matrix()).by_name(run_name)
    except MatrixError:
        return f"`{run_name}`: not a row of the experiment matrix (configs/experiments.yaml)."
    r = inst.run
    what = f"{r.detector} {r.backbone} {r.role}" + (f", method {r.method}" if r.method else "")
    what += f", teacher `{r.teacher}`" if r.teacher else ""
    cells = "; ".join(f"{c.table}: " + " / ".join(x for x in (c.block, c.row) if x) for c in r.cells)
    return (f"Row `{r.id}` of configs/experiments.yaml, seed {inst.seed}: {what} ({r.dataset}).\n\n"
            f"Table cells: {cells or 'none'}." + (f"\n\n{r.note}" if r.note else ""))


def _tag_value(value: Any) -> str:
    if isinstance(value, (list, tuple, set)):
        return ",".join(str(v) for v in value)
    return "none" if value is None else str(value)


def mlflow_vis_backend(results_dir: str | os.PathLike, profile: str, run_name: str,
                       tags: Mapping[str, Any] | None = None,
                       artifact_suffix: Iterable[str] = DEFAULT_ARTIFACT_SUFFIX,
                       save_dir: str | None = None) -> dict:
    """Config dict for mmengine's ``MLflowVisBackend`` logging into this project's store.

    Put it in ``visualizer.vis_backends``; the Runner fills ``save_dir``. The backend
    (:class:`PGDMLflowVisBackend`) logs every key of the flattened resolved config as a param, the losses and lr
    at the logger interval, the resolved config as ``config.py`` (on close replaced by the run dir's own
    config.py), the work dir's other files ending in ``artifact_suffix`` (not mmengine's <timestamp>.py dump), and
    the text log as ``train.log``. Tags follow the contract (``tables`` as a comma list, ``detector``, ``method``, ``role``);
    list values are joined with commas; the run's description is :func:`run_description`. Prepares the store, so
    call it in the process that trains, before the Runner is built.
    """
    if not run_name or not isinstance(run_name, str):
        raise ValueError(f"run_name must be a non-empty string, got {run_name!r}")
    prepare_tracking(results_dir, profile)
    run_tags = {str(k): _tag_value(v) for k, v in (tags or {}).items()}
    run_tags.setdefault(NOTE_TAG, run_description(run_name))
    cfg = dict(type=BACKEND_TYPE, exp_name=experiment_name(profile), run_name=run_name, tags=run_tags,
               tracking_uri=tracking_uri(results_dir), artifact_suffix=tuple(artifact_suffix))
    if save_dir is not None:
        cfg["save_dir"] = str(save_dir)
    return cfg


def find_run(results_dir: str | os.PathLike, profile: str, run_name: str):
    """The most recently started run called ``run_name``, or None. (``pgd train --resume`` reopens this run; a
    training rerun from scratch starts a new one of the same name.)"""
    client = _client(tracking_uri(results_dir))
    exp = _retry(client.get_experiment_by_name, experiment_name(profile))
    if exp is None:
        return None
    quoted = run_name.replace("'", "\\'")
    runs = _retry(client.search_runs, [exp.experiment_id], filter_string=f"attributes.run_name = '{quoted}'",
                  order_by=["attributes.start_time DESC"], max_results=1)
    return runs[0] if runs else None


def _split_metrics(metrics: Mapping[str, Any]) -> tuple[dict[str, float], dict[str, str]]:
    """Numbers become metrics; strings (``"dataset": "coco"`` in metrics.json) become ``eval.<key>`` tags."""
    values, labels = {}, {}
    for key, value in metrics.items():
        if isinstance(value, bool) or value is None:
            raise TypeError(f"metric {key!r}: expected a number or a string, got {value!r}")
        if isinstance(value, numbers.Real):
            values[key] = float(value)
        elif isinstance(value, str):
            labels[f"eval.{key}"] = value
        else:
            raise TypeError(f"metric {key!r}: expected a number or a string, got {type(value).__name__}")
    bad = [k for k, v in values.items() if math.isinf(v)]
    if bad:
        raise ValueError(f"metrics {bad} are infinite")
    return values, labels


def log_eval_metrics(results_dir: str | os.PathLike, profile: str, run_name: str, metrics: Mapping[str, Any],
                     artifacts: Iterable[str | os.PathLike] = ()) -> str:
    """Log final metrics (step 0) and files to the run called ``run_name``; create the run if training did not
    log one. Returns the run id."""
    from mlflow.entities import Metric, RunTag

    values, labels = _split_metrics(metrics)
    files = [Path(p) for p in artifacts]
    missing = [str(p) for p in files if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"artifacts to log do not exist: {missing}")
    exp_id = prepare_tracking(results_dir, profile)
    client = _client(tracking_uri(results_dir))
    run = find_run(results_dir, profile, run_name)
    created = run is None
    run_id = (_retry(client.create_run, exp_id, run_name=run_name, tags={NOTE_TAG: run_description(run_name)})
              if created else run).info.run_id
    now = int(time.time() * 1000)
    _retry(client.log_batch, run_id, metrics=[Metric(k, v, now, 0) for k, v in values.items()],
           tags=[RunTag(k, v) for k, v in labels.items()])
    for path in files:
        _retry(client.log_artifact, run_id, str(path))
    if created:
        _retry(client.set_terminated, run_id)
    return run_id


def log_run(results_dir: str | os.PathLike, profile: str, run_name: str, params: Mapping[str, Any],
            history: Iterable[Mapping[str, Any]], metrics: Mapping[str, Any],
            tags: Mapping[str, Any] | None = None, artifacts: Iterable[str | os.PathLike] = ()) -> str:
    """Log a run trained outside mmengine (``pgd pretrain``): params, per-step scalars (``history`` rows hold
    ``iter`` and the scalar values at it), final metrics, tags and files, as one new finished run."""
    from mlflow.entities import Metric, Param, RunTag

    exp_id = prepare_tracking(results_dir, profile)
    client = _client(tracking_uri(results_dir))
    run_tags = {NOTE_TAG: run_description(run_name), **{str(k): _tag_value(v) for k, v in (tags or {}).items()}}
    run_id = _retry(client.create_run, exp_id, run_name=run_name, tags=run_tags).info.run_id
    now = int(time.time() * 1000)
    steps = [Metric(k, float(v), now, int(row["iter"])) for row in history for k, v in row.items() if k != "iter"]
    values, labels = _split_metrics(metrics)
    _retry(client.log_batch, run_id, metrics=steps + [Metric(k, v, now, 0) for k, v in values.items()],
           params=[Param(str(k), _tag_value(v)) for k, v in params.items()],
           tags=[RunTag(k, v) for k, v in labels.items()])
    for path in artifacts:
        _retry(client.log_artifact, run_id, str(path))
    _retry(client.set_terminated, run_id)
    return run_id


def _register_backend():
    """:class:`PGDMLflowVisBackend` in mmengine's VISBACKENDS (defined here so that importing pgd.tracking, as
    pgd train does before building the Runner, registers it)."""
    import tempfile

    from mmengine.registry import VISBACKENDS
    from mmengine.visualization import MLflowVisBackend

    @VISBACKENDS.register_module(name=BACKEND_TYPE, force=True)
    class PGDMLflowVisBackend(MLflowVisBackend):
        """MLflowVisBackend that logs only measurements and the text log as one ``train.log`` artifact."""

        def add_scalar(self, name, value, step=0, **kwargs):
            if name not in NOT_METRICS:
                super().add_scalar(name, value, step, **kwargs)

        def add_scalars(self, scalar_dict, step=0, file_path=None, **kwargs):
            kept = {k: v for k, v in scalar_dict.items() if k not in NOT_METRICS}
            if kept:
                super().add_scalars(kept, step, file_path, **kwargs)

        def close(self):
            if not hasattr(self, "_mlflow"):
                return
            work_dir = Path(self.cfg.work_dir)
            suffix = (self._artifact_suffix,) if isinstance(self._artifact_suffix, str) else self._artifact_suffix
            # the run dir's own config.py replaces add_config's rendering of it; another .py here is mmengine's
            # <timestamp>.py dump of the same config
            for path in sorted(work_dir.iterdir()):
                if (path.is_file() and path.name.endswith(tuple(suffix))
                        and (path.suffix != ".py" or path.name == "config.py")):
                    self._mlflow.log_artifact(str(path))
            # mmengine writes <work_dir>/<timestamp>/<timestamp>.log per training process; a resumed run has several
            logs = sorted(work_dir.glob("*/*.log"))
            if logs and ".log" in suffix:
                with tempfile.TemporaryDirectory() as tmp:
                    merged = Path(tmp) / TRAIN_LOG
                    merged.write_text("".join(p.read_text(errors="replace") for p in logs))
                    self._mlflow.log_artifact(str(merged))
            self._mlflow.end_run()

    return PGDMLflowVisBackend


PGDMLflowVisBackend = _register_backend()


def ui_url(base_url: str, experiment_id: str, run_id: str | None = None) -> str:
    """The MLflow UI page of an experiment's training runs (or of one run). ``workflowType=machine_learning`` picks
    the UI's "Model training" view; MLflow 3's default "GenAI" view would open on a traces overview."""
    page = f"{base_url}/#/experiments/{experiment_id}" + (f"/runs/{run_id}" if run_id else "")
    return page + "?workflowType=machine_learning"


@contextmanager
def mlflow_server(results_dir: str | os.PathLike, port: int | None = None, timeout: float = 300.0):
    """``mlflow server`` on 127.0.0.1 over the profile's store, for as long as the block runs; yields its base URL.

    Used by the tests and scripts/mlflow_screenshots.py; ``mlflow ui --backend-store-uri ...`` does the same
    interactively. Starts in its own process group, which is stopped on exit."""
    import signal
    import socket
    import subprocess
    import sys
    import urllib.request

    if port is None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    results = Path(results_dir).resolve()
    log = open(results / "mlflow-server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
                             tracking_uri(results), "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                            cwd=results, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited with {proc.returncode}; see {log.name}")
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=5) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"mlflow server on {base} not up after {timeout:.0f} s; see {log.name}")
            time.sleep(0.5)
        yield base
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()
