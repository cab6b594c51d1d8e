"""The SLURM workflow profile against a real SLURM: a single-node cluster on this machine
(scripts/slurm_localhost.sh: munged, slurmctld, slurmd), a slice of the DAG (data, backbone pretraining, one
teacher, one distilled student) submitted through `--workflow-profile workflow/profiles/slurm`. Checks what SLURM
gave each job against the profile, cancels the student mid-run and checks that Snakemake's retry resumes it.

Skipped (reason printed with -rs) where SLURM or the executor plugin is not installed or the test is not root;
PGD_REQUIRE_SLURM=1 (CI) turns those skips into failures."""
from __future__ import annotations

import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "slurm_localhost.sh"
TEACHER, STUDENT = "atss_r101_teacher", "atss_r50_pgd"
ITERS = 6
FAKE_GPUS = 2
# the test's own resources on top of workflow/config/mini.yaml: one CPU per training so that two jobs share a
# 2-core node; the student asks for the node's (fake) GPUs and a shorter time limit, so that both reach sbatch
OVERRIDES = {"train_teacher": {"threads": 1}, "train_student": {"threads": 1, "gpu": FAKE_GPUS, "runtime": 20}}


def _unavailable(reason: str):
    if os.environ.get("PGD_REQUIRE_SLURM") == "1":
        pytest.fail(f"PGD_REQUIRE_SLURM=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if importlib.util.find_spec("snakemake_executor_plugin_slurm") is None:
        _unavailable("snakemake-executor-plugin-slurm is not installed (pip install -e '.[slurm]')")
    missing = [t for t in ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "scancel")
               if shutil.which(t) is None]
    if missing:
        _unavailable(f"SLURM is not installed (no {', '.join(missing)}): scripts/slurm_localhost.sh install")
    if os.geteuid() != 0:
        _unavailable("the localhost SLURM cluster needs root (slurmd starts jobs as their users)")
    state = tmp_path_factory.mktemp("slurm")
    env = {**os.environ, "PGD_SLURM_FAKE_GPUS": str(FAKE_GPUS)}
    start = subprocess.run([str(SCRIPT), "start", str(state)], capture_output=True, text=True, env=env, timeout=120)
    if start.returncode != 0:
        _unavailable(f"the localhost SLURM cluster did not start:\n{start.stdout[-2000:]}{start.stderr[-3000:]}")
    try:
        yield {**os.environ, "SLURM_CONF": str(state / "slurm.conf"), "PYTHONWARNINGS": "ignore"}, state
    finally:
        subprocess.run([str(SCRIPT), "stop", str(state)], capture_output=True, timeout=120)


def _write_slice(tmp: Path) -> Path:
    with open(REPO / "configs" / "experiments.yaml") as f:
        rows = [r for r in yaml.safe_load(f)["runs"] if r["id"] in (TEACHER, STUDENT)]
    (tmp / "matrix.yaml").write_text(yaml.safe_dump({"runs": rows}))
    cfg = {
        "matrix": str(tmp / "matrix.yaml"),
        "results": str(tmp / "results"),
        "data": {"generate": True, "coco_args": "--seed 0 --num-train 8 --num-val 4 --image-size 64",
                 "crowdhuman_args": "--seed 0 --num-train 4 --num-val 2 --image-size 64"},
        # a checkpoint after every iteration: the cancel lands between two of them
        "train_args": f"--set train_cfg.max_iters={ITERS} --set default_hooks.checkpoint.interval=1 "
                      "--set +default_hooks.checkpoint.max_keep_ckpts=2",  # +: students have no such key
        "pretrain_args": "--iters 1 --eval-images 8",
        "resources": OVERRIDES,
    }
    (tmp / "test.yaml").write_text(yaml.safe_dump(cfg))
    return tmp / "results" / "mini"


def _expected(rule: str) -> dict:
    """What the profile asks SLURM for: resources from workflow/config/mini.yaml (+ the test's overrides),
    the partition from the SLURM profile."""
    key = {"data_coco": "data", "pretrain_backbone": "pretrain", "pretrain_backbone_r101": "pretrain"}.get(rule, rule)
    res = yaml.safe_load((REPO / "workflow" / "config" / "mini.yaml").read_text())["resources"][key]
    res = {**res, **OVERRIDES.get(key, {})}
    profile = yaml.safe_load((REPO / "workflow" / "profiles" / "slurm" / "config.yaml").read_text())
    partition = profile.get("set-resources", {}).get(rule, {}).get(
        "slurm_partition", profile["default-resources"]["slurm_partition"])
    return dict(partition=partition, cpus=res["threads"], mem=f"{res['mem_mb']}M", minutes=res["runtime"],
                gpus=res["gpu"])


def _scontrol_jobs(env) -> dict[str, dict]:
    out = subprocess.run(["scontrol", "show", "job", "--oneliner"], capture_output=True, text=True, env=env,
                         timeout=30).stdout
    jobs = {}
    for line in out.splitlines():
        fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
        if "JobId" in fields:
            jobs[fields["JobId"]] = fields
    return jobs


def _jobcomp(state: Path) -> dict[str, dict]:
    """jobcomp/filetxt: one line per finished job, whatever MinJobAge has purged from slurmctld since."""
    jobs = {}
    for line in (state / "jobcomp.txt").read_text().splitlines():
        fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
        jobs[fields["JobId"]] = fields
    return jobs


class _Resources(dict):
    __getattr__ = dict.__getitem__


@pytest.mark.parametrize("rule", ["train_teacher", "train_student", "pilot", "table"])
def test_paper_sbatch_line(rule):
    """The sbatch options the pinned plugin builds for a paper-profile job from the two YAML files: one task of
    `threads` CPUs with the rule's GPUs (a GPU job given `tasks` would get --ntasks-per-gpu: 8 tasks x 32 CPUs)."""
    if importlib.util.find_spec("snakemake_executor_plugin_slurm") is None:
        pytest.skip("snakemake-executor-plugin-slurm is not installed (pip install -e '.[slurm]')")
    from snakemake_executor_plugin_slurm.submit_string import get_submit_command
    from snakemake_executor_plugin_slurm.utils import set_gres_string

    res = yaml.safe_load((REPO / "workflow" / "config" / "paper.yaml").read_text())["resources"][rule]
    profile = yaml.safe_load((REPO / "workflow" / "profiles" / "slurm" / "config.yaml").read_text())
    resources = _Resources({**profile["default-resources"], "mem_mb": res["mem_mb"], "runtime": res["runtime"],
                            "gpu": res["gpu"], **profile["set-resources"].get(rule, {})})

    class Job:
        threads = res["threads"]

    Job.resources = resources
    params = dict(run_uuid="RUN", slurm_logfile="LOG", comment_str=f"rule_{rule}", account="",
                  partition=f" -p {resources['slurm_partition']}", workdir="")
    call = get_submit_command(Job, params) + set_gres_string(Job)
    assert "--ntasks-per-gpu" not in call and "--ntasks=" not in call.replace("--ntasks=1", "")
    assert f"--cpus-per-task={res['threads']}" in call
    assert f"--mem {res['mem_mb']}" in call and f"-t {res['runtime']}" in call
    assert (f"--gpus={res['gpu']}" in call) == bool(res["gpu"]) and ("--gpus" in call) == bool(res["gpu"])
    assert f"-p {'gpu' if res['gpu'] else 'cpu'}" in call


@pytest.mark.slow
def test_slice_through_slurm_profile(cluster, tmp_path):
    env, state = cluster
    out = _write_slice(tmp_path)
    run_dir = out / "runs" / STUDENT
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(tmp_path),
           "--configfile", str(tmp_path / "test.yaml"), "--workflow-profile", str(REPO / "workflow/profiles/slurm"),
           # no slurmdbd here, so no sacct: job states from slurmctld (MinJobAge=300 keeps finished jobs there)
           "--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", "2",
           str(run_dir / "model.pth")]
    log_path = tmp_path / "snakemake.log"
    seen: dict[str, dict] = {}          # every job scontrol showed, at its last sighting
    cancelled = None
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            # a guard against a hang, not a timing check (docs/pipeline.md lists the measured times)
            deadline = time.time() + 1800
            while proc.poll() is None:
                assert time.time() < deadline, "the slice did not finish in 30 minutes:\n" + log_path.read_text()[-3000:]
                seen.update(_scontrol_jobs(env))
                if cancelled is None and (run_dir / "last_checkpoint").exists():
                    running = [j for j, f in seen.items() if f.get("JobState") == "RUNNING"
                               and f.get("Comment") == f"rule_train_student_wildcards_{STUDENT}"]
                    if running:
                        cancelled = running[0]
                        subprocess.run(["scancel", cancelled], check=True, env=env, timeout=30)
                time.sleep(0.5)
        finally:
            if proc.poll() is None:     # SIGKILL: on SIGTERM Snakemake waits for its running jobs
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    seen.update(_scontrol_jobs(env))
    text = log_path.read_text()
    assert proc.returncode == 0, text[-4000:]
    assert cancelled is not None, "the student never ran with a checkpoint on disk"

    # which Snakemake rule each SLURM job belongs to, from the plugin's submission lines
    rule_of = {jid: rule for jid, rule in
               re.findall(r"submitted with SLURM jobid (\d+) \(log: \S*/slurm_logs/rule_(\w+)/", text)}
    by_rule: dict[str, list[str]] = {}
    for jid, rule in sorted(rule_of.items(), key=lambda kv: int(kv[0])):
        by_rule.setdefault(rule, []).append(jid)
    assert {r: len(j) for r, j in by_rule.items()} == {
        "data_coco": 1, "pretrain_backbone": 1, "pretrain_backbone_r101": 1, "train_teacher": 1, "teacher_cache": 1,
        "train_student": 2}

    done = _jobcomp(state)
    for rule, jids in by_rule.items():
        want = _expected(rule)
        for jid in jids:
            rec, live = done[jid], seen[jid]
            assert rec["Partition"] == want["partition"], (rule, rec)
            assert rec["TimeLimit"] == str(want["minutes"]), (rule, rec)
            assert rec["Tres"] == f"cpu={want['cpus']},mem={want['mem']},node=1,billing={want['cpus']}", (rule, rec)
            assert live["NumTasks"] == "1" and live["NumNodes"] == "1", (rule, live)
            assert live.get("TresPerJob") == (f"gres:gpu:{want['gpus']}" if want["gpus"] else None), (rule, live)
    states = {jid: done[jid]["JobState"] for jid in rule_of}
    first, retry = by_rule["train_student"]
    assert first == cancelled and states[first] == "CANCELLED"
    assert all(s == "COMPLETED" for j, s in states.items() if j != first), states

    # the retry continued from the cancelled job's checkpoint and finished the schedule
    train_log = (out / "logs" / "train" / f"{STUDENT}.log").read_text()
    resumed = re.search(r"resumed epoch: \d+, iter: (\d+)", train_log)
    assert resumed and 1 <= int(resumed.group(1)) <= ITERS, train_log[-3000:]
    assert (run_dir / "model.pth").is_file() and (run_dir / "metrics.json").is_file()
    assert not list(run_dir.glob("iter_*.pth"))
