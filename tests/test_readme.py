"""README.md works as written: every command of its ```bash blocks is classified, and on a fresh copy of the
repository (the tracked files, with the venv on PATH as `source .venv/bin/activate` puts it) the cheap ones run as
written - help, `--version`, data generation - the Snakemake ones as dry runs (`-n`), and `pgd train` / `pgd eval`
/ `pgd pretrain` commands at least get through their command line (train: the config composes; what it still lacks
is the output of an earlier step, such as the teacher's run)."""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# (pattern, how the test treats it); the first match wins, and a README command matching none fails the test
RULES = [
    (r"^make (setup|test)$", "setup"),                 # the two setup commands themselves
    (r"^source \.venv/bin/activate$", "env"),          # done by putting the venv's bin first on PATH
    (r"^mlflow ui ", "server"),                        # interactive: tests/test_tracking.py starts a real server
    (r"^make mini$", "make-dry"),
    (r"^snakemake ", "snakemake-dry"),
    (r"^pgd( [a-z]+)? --(help|version)$", "run"),
    (r"^pgd status$", "run"),                          # reads only: every run missing in a fresh copy
    (r"^pgd data (coco|crowdhuman) ", "run"),
    (r"^pgd train ", "train-args"),
    (r"^pgd (eval|pretrain) ", "args"),
]


def readme_commands(text: str) -> list[str]:
    """The command lines of the ```bash blocks, trailing comments removed."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.splitlines():
            line = re.sub(r"\s+#\s.*$", "", line).strip()
            if line and not line.startswith("#"):
                commands.append(line)
    return commands


def classify(command: str) -> str:
    for pattern, mode in RULES:
        if re.search(pattern, command):
            return mode
    raise AssertionError(f"README command {command!r} matches no rule of tests/test_readme.py: classify it")


@pytest.fixture(scope="module")
def fresh_copy(tmp_path_factory) -> Path:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: cannot list the tracked files")
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, check=True, capture_output=True).stdout
    dest = tmp_path_factory.mktemp("clone")
    for name in files.decode().split("\0"):
        if name and (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    return dest


def shell(command: str, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    venv_bin = str(Path(sys.executable).parent)
    env = dict(os.environ, PATH=venv_bin + os.pathsep + os.environ.get("PATH", ""), PYTHONPATH=str(cwd),
               OMP_NUM_THREADS="1")
    env.pop("PGD_RESULTS", None)
    return subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def only_the_named_datasets_are_missing(command: str, output: str) -> bool:
    """A paper-profile dry run on this machine lacks only the dataset files under the roots it names."""
    roots = re.findall(r"\b\w+_root=(\S+)", command)
    if not roots:
        return False
    if "dataset not found:" in output:   # the workflow's own check (pgd.workflow_config): one message, exit 2
        missing = re.findall(r"dataset not found: (\S+) does not exist", output)
    elif "MissingInputException" in output:
        missing = [ln.strip() for ln in output.split("affected files:", 1)[-1].splitlines()
                   if ln.strip().startswith("/")]
    else:
        return False
    return bool(missing) and all(any(m.startswith(r.rstrip("/") + "/") for r in roots) for m in missing)


def test_every_readme_command_is_classified():
    commands = readme_commands((ROOT / "README.md").read_text())
    modes = [classify(c) for c in commands]
    assert "pgd --help" in commands and "make mini" in commands
    assert modes.count("snakemake-dry") >= 4 and "train-args" in modes
    # no placeholder commands ("pgd train ... --resume"): every line must run as written
    assert not [c for c in commands if "..." in c]


@pytest.mark.slow      # ~40 s on an idle 2-core machine (imports, data generation, five dry runs), 2 min loaded
def test_readme_commands_run_as_written(fresh_copy):
    commands = readme_commands((fresh_copy / "README.md").read_text())
    failures = []
    for command in commands:
        mode = classify(command)
        if mode in ("setup", "env", "server"):
            continue
        if mode == "make-dry":
            proc = shell("make -n " + command.split(" ", 1)[1], fresh_copy)
            ok = proc.returncode == 0 and "snakemake --cores all" in proc.stdout
        elif mode == "snakemake-dry":
            proc = shell(command if re.search(r"\s-n(\s|$)", command) else command + " -n", fresh_copy)
            ok = proc.returncode == 0 and "This was a dry-run" in proc.stdout + proc.stderr
            ok = ok or only_the_named_datasets_are_missing(command, proc.stdout + proc.stderr)
        elif mode == "run":
            proc = shell(command, fresh_copy)
            ok = proc.returncode == 0
        else:
            proc = shell(f"{sys.executable} -c {shlex.quote(ARGS_CHECK)} {mode} {shlex.quote(command)}", fresh_copy)
            ok = proc.returncode == 0
        if not ok:
            failures.append(f"{command}\n  exit {proc.returncode}: {(proc.stdout + proc.stderr)[-1500:]}")
    assert not failures, "README commands that fail as written:\n" + "\n".join(failures)


# Runs in the fresh copy: parse a `pgd train/eval/pretrain` command line with the command's own parser; for train,
# compose the config too. Only the outputs of earlier steps may be missing (a teacher's run), never an option.
ARGS_CHECK = r"""
import shlex, sys
mode, command = sys.argv[1], sys.argv[2]
words = shlex.split(command)[1:]
name, argv = words[0], words[1:]
if name == "train":
    from pgd import run_setup, train
    args = train.build_parser().parse_args(argv)
    try:
        run_setup.compose(args)
    except run_setup.TrainError as err:
        if not str(err).startswith("teacher file missing"):
            raise
elif name == "eval":
    from pgd import eval as ev
    ev.build_parser().parse_args(argv)
else:
    from pgd import pretrain
    pretrain.build_parser().parse_args(argv)
"""
