# Shared helpers: the matrix, the profile's seeds and paths, resources and the environment of every job.
import json
import re
import shlex
import sys

from pgd.errors import UserError, report_user_error
from pgd.matrix import EXTRA_TABLE, TABLES, FIGURES, check_seeds, figure_runs, load_matrix, run_name, with_extras
from pgd.workflow_config import check_dataset_files

PROFILE = config["profile"]
MATRIX_FILE = os.path.join(workflow.basedir, config["matrix"])
try:   # a bad matrix row (unknown override, teacher...) is one message and exit 2, before any job is planned
    MATRIX = load_matrix(MATRIX_FILE)
    SEEDS = check_seeds(config["seeds"])
except UserError as err:
    sys.exit(report_user_error("snakemake", err))
RESULTS = config["results"]
OUT = f"{RESULTS}/{PROFILE}"
RUNS = f"{OUT}/runs"
LOGS = f"{OUT}/logs"
TABLE_DIR = f"{OUT}/tables"
FIG_DIR = f"{OUT}/figures"
REPORT = f"{OUT}/report.md"

# the matrix's runs plus the extra methods' (pgd.matrix.with_extras): those train only for the `extras` target
RUNS_MATRIX = with_extras(MATRIX)
TEACHERS = MATRIX.teacher_instances(SEEDS)
STUDENTS = RUNS_MATRIX.student_instances(SEEDS)
INSTANCES = {i.name: i for i in TEACHERS + STUDENTS}
COCO_TEACHERS = [i for i in TEACHERS if i.run.dataset == "coco"]


def _alternation(names):
    # wildcard constraints: exactly these run names, so the two training rules never compete for an output
    return "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True)) or "(?!)"


RUN_RE = _alternation(INSTANCES)
COCO_TEACHER_RE = _alternation(i.name for i in COCO_TEACHERS)
TABLE_STEMS = {stem: tid for tid, (stem, _) in TABLES.items()}   # the paper's tables: what `all` renders
EXTRA_STEMS = {EXTRA_TABLE: EXTRA_TABLE}


def run_path(name, filename=""):
    return f"{RUNS}/{name}/{filename}" if filename else f"{RUNS}/{name}"


def res(rule_name, key):
    return config["resources"][rule_name][key]


def resources_of(rule_name):
    """Snakemake resources of a rule from the profile (`gpu` is the SLURM executor plugin's GPU count)."""
    r = config["resources"][rule_name]
    return dict(mem_mb=r["mem_mb"], gpu=r["gpu"], runtime=r["runtime"])


# ------------------------------------------------------------------ data locations per profile
if config["data"]["generate"]:
    COCO_ROOT = f"{RESULTS}/data/synth_coco"
    CROWD_ROOT = f"{RESULTS}/data/synth_crowd"
    COCO_FILES = {"train": f"{COCO_ROOT}/annotations/instances_train.json",
                  "val": f"{COCO_ROOT}/annotations/instances_val.json"}
else:
    COCO_ROOT = config["coco_root"]
    CROWD_ROOT = config["crowdhuman_root"]
    COCO_FILES = {"train": f"{COCO_ROOT}/annotations/instances_train2017.json",
                  "val": f"{COCO_ROOT}/annotations/instances_val2017.json"}
CROWD_FILES = {"train": f"{CROWD_ROOT}/annotation_train.odgt", "val": f"{CROWD_ROOT}/annotation_val.odgt"}


def data_files(dataset):
    files = list((COCO_FILES if dataset == "coco" else CROWD_FILES).values())
    if not config["data"]["generate"]:
        # real data (called from input functions: only the datasets of the planned jobs must exist): name the
        # config key and the layout instead of Snakemake's MissingInputException
        try:
            check_dataset_files(dataset, COCO_ROOT if dataset == "coco" else CROWD_ROOT, files,
                                others={"coco": COCO_ROOT, "crowdhuman": CROWD_ROOT})
        except UserError as err:
            sys.exit(report_user_error("snakemake", err))
    return files


def data_root_arg(dataset):
    """Generated sets: point the run's config at them (its default is results/data/..., which a relocated
    results root would miss); real datasets come from $PGD_COCO_ROOT / $PGD_CROWDHUMAN_ROOT."""
    if not config["data"]["generate"]:
        return ""
    root = COCO_ROOT if dataset == "coco" else CROWD_ROOT
    return f"--set data_root={shlex.quote(os.path.abspath(root) + '/')}"


# ------------------------------------------------------------------ pretrained backbones
# A profile with a `pretrain` section (mini) starts every backbone from `pgd pretrain`'s checkpoint in
# <results>/<profile>/pretrained/; other profiles (paper: ImageNet weights) have no pretraining jobs.
from pgd.config import load_profile

_pretrain_settings = dict(load_profile(PROFILE).get("pretrain") or {})
PRETRAIN = bool(_pretrain_settings)
PRETRAINED_DIR = f"{OUT}/pretrained"
# The profile's pretraining recipe as a rule param: Snakemake reruns a job whose params changed, so a new recipe
# (lr, warm-up, iterations...) retrains the backbones and, through them, every detector; a param of an unchanged
# recipe leaves finished checkpoints alone.
PRETRAIN_RECIPE = json.dumps(_pretrain_settings, sort_keys=True)


def pretrained_arg():
    return f"--set pretrained_dir={shlex.quote(os.path.abspath(PRETRAINED_DIR))}" if PRETRAIN else ""


def pretrained_input(backbone):
    return [f"{PRETRAINED_DIR}/{backbone}.pth"] if PRETRAIN else []


# The interpreter running Snakemake runs the jobs too (no reliance on `pgd` being on PATH).
PYTHON = shlex.quote(sys.executable)
PGD = f"{PYTHON} -m pgd.cli"

# Every job sees the dataset roots (configs read $PGD_COCO_ROOT / $PGD_CROWDHUMAN_ROOT) and the results root.
ENV = (f"PGD_COCO_ROOT={shlex.quote(os.path.abspath(COCO_ROOT))} "
       f"PGD_CROWDHUMAN_ROOT={shlex.quote(os.path.abspath(CROWD_ROOT))} "
       f"PGD_RESULTS={shlex.quote(RESULTS)} PGD_MATRIX={shlex.quote(MATRIX_FILE)}")


# ------------------------------------------------------------------ training
def teacher_env():
    """`--config teacher_iters=N` (mini): the teachers train N iterations in the mini schedule's shape
    (configs/profiles/mini.py reads $PGD_MINI_TEACHER_ITERS). As a rule param, a new N reruns the teachers, and
    their students follow through model.pth. Unset (the default): the profile's own length."""
    n = config.get("teacher_iters")
    if n is None:
        return ""
    if PROFILE != "mini":
        raise ValueError(f"teacher_iters={n!r}: only the mini profile has iteration schedules "
                         f"(profile {PROFILE!r} sets its teachers' epochs in configs/profiles/{PROFILE}.py)")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"teacher_iters must be a positive integer number of iterations, got {n!r}")
    return f"PGD_MINI_TEACHER_ITERS={n}"



def train_command():
    """The training job. `--resume` continues an interrupted job from its last iter_*.pth. A run directory whose
    training once completed (marker TRAINED) holds checkpoints of a superseded run - Snakemake reruns a finished
    job only because its inputs or settings changed - so those are cleared and training starts afresh."""
    wd = "{params.work_dir}"
    if config["launcher"] == "pytorch":
        # paper scale: one process per GPU of the job; mmengine initialises the process group from torchrun's env.
        # The test then runs as one process of its own (pgd eval) on the job's first GPU.
        launch = (f"{PYTHON} -m torch.distributed.run --standalone --nproc_per_node={{resources.gpu}} "
                  "-m pgd.cli train --launcher pytorch")
        evaluate = f" && {ENV} PGD_THREADS={{threads}} {PGD} eval --run-dir {wd} >> {{log}} 2>&1"
    else:
        # the test in the training process: one interpreter / mmdet start-up per run instead of two
        launch = f"{PGD} train --eval"
        evaluate = ""
    marker = f"{wd}/{TRAINED}"
    # mmengine deletes the oldest kept checkpoint *before* writing the next one, so a kill during that write can
    # leave last_checkpoint naming a file that does not exist: point it at the newest iter_*.pth left, or drop it
    repair = (f"if [ -e {wd}/last_checkpoint ] && [ ! -e \"$(cat {wd}/last_checkpoint)\" ]; then "
              f"latest=$(ls -1v {wd}/iter_*.pth 2>/dev/null | tail -n 1 || true); "
              f"if [ -n \"$latest\" ]; then echo \"$latest\" > {wd}/last_checkpoint; "
              f"else rm -f {wd}/last_checkpoint; fi; fi; ")
    # model.pth is the run's result; its resume checkpoints (2 x ~390 MB for a distilled R50 with AdamW state and
    # the teacher) are dead weight once it exists: 85 runs filled a 100 GB disk. keep_checkpoints: true keeps them.
    cleanup = "" if config.get("keep_checkpoints", False) else f"; rm -f {wd}/iter_*.pth {wd}/last_checkpoint"
    return (
        f"if [ -e {marker} ]; then rm -f {wd}/iter_*.pth {wd}/last_checkpoint {marker}; fi; " + repair +
        f"{ENV} {{params.env}} PGD_THREADS={{threads}} {launch} --run {{params.run_id}} --profile {PROFILE} "
        f"--matrix {{params.matrix}} --seed {{params.seed}} --work-dir {{params.work_dir}} {{params.teacher}} "
        f"--threads {{threads}} --resume {{params.data_root}} {{params.pretrained}} {{params.extra}} > {{log}} 2>&1"
        + evaluate + f"; touch {marker}" + cleanup
    )


TRAINED = ".trained"


# ------------------------------------------------------------------ run identity (pgd.provenance)
# Every run's digest under the current configuration: a param of the training rules, so an edit that changes what
# a run composes to (its matrix row, the profile, its method config, its teacher's recipe...) reruns exactly that
# run and everything downstream; an edit that changes no composition (another row, a comment) reruns nothing.
from pgd.provenance import Settings, TRAIN_ARGS_ENV, expected_digests, train_overrides
from pgd.teacher_inputs import CACHE_FILE as TEACHER_CACHE

# what `pgd table` / `pgd report` need to recompute the same digests (teacher_env() also checks teacher_iters)
PROVENANCE_ENV = f"{TRAIN_ARGS_ENV}={shlex.quote(config['train_args'])} " + teacher_env()
PROVENANCE_SETTINGS = Settings(train_args=config["train_args"], teacher_iters=config.get("teacher_iters"))
try:   # composing every run checks the config tree too: a bad profile or method config is one message
    EXPECTED = expected_digests(RUNS_MATRIX, SEEDS, PROFILE, PROVENANCE_SETTINGS)
except UserError as err:
    sys.exit(report_user_error("snakemake", err))


# Instances that compose to the same recipe (equal digests: in the paper profile, the "no inherit" rows of methods
# that never inherit are their Table 1 rows) train once: the first in matrix order trains, the others' run dirs are
# links to its dir (rule link_run), so each table cell still reads its own run name.
_first_of_digest = {}
TRAINED_AS = {n: _first_of_digest.setdefault(EXPECTED[n].digest, n) for n in INSTANCES}
LINKED = {n: t for n, t in TRAINED_AS.items() if n != t}
TEACHER_RE = _alternation(i.name for i in TEACHERS if i.name not in LINKED)
STUDENT_RE = _alternation(i.name for i in STUDENTS if i.name not in LINKED)
LINKED_RE = _alternation(LINKED)


def teacher_dir(inst):
    """The directory of the instance's teacher (where it was trained, for a linked teacher), or None."""
    teacher = RUNS_MATRIX.teacher_of(inst)
    return run_path(TRAINED_AS[teacher.name]) if teacher else None


def train_params(name):
    inst = INSTANCES[name]
    teacher = teacher_dir(inst)
    return dict(
        run_id=inst.run.id,
        seed=inst.seed,
        work_dir=run_path(name),
        teacher=f"--teacher-dir {teacher}" if teacher else "",
        data_root=data_root_arg(inst.run.dataset),
        pretrained=pretrained_arg(),
        digest=EXPECTED[name].digest,
    )


def train_inputs(wildcards):
    inst = INSTANCES[wildcards.run]
    teacher = teacher_dir(inst)
    return (data_files(inst.run.dataset) + pretrained_input(inst.run.backbone)
            + ([f"{teacher}/model.pth"] if teacher else [])
            + ([f"{teacher}/{TEACHER_CACHE}"] if teacher and reads_teacher_cache(wildcards.run) else []))


def reads_teacher_cache(name):
    """Whether the run's composed config reads its teacher's outputs from a cache (profile key teacher_cache)."""
    return "teacher_cache" in EXPECTED[name].recipe["config"]["model"]


def cache_signatures(teacher_name):
    """The input signatures of the runs that read this teacher's cache: a param of rule teacher_cache, so an edit
    of the students' pipeline, preprocessor or training set rebuilds it (the taps it holds are checked when a
    student loads it)."""
    return sorted({EXPECTED[n].recipe["config"]["model"]["teacher_cache"]["input_signature"]
                   for n, inst in INSTANCES.items()
                   if teacher_dir(inst) == run_path(teacher_name) and reads_teacher_cache(n)})


def set_args(args):
    """Only the `--set KEY=VALUE` words of an argument string (`pgd teacher-cache` takes no other train flag)."""
    return " ".join(f"--set {shlex.quote(f'{k}={v}')}" for k, v in train_overrides(args).items())


# ------------------------------------------------------------------ tables and figures
def table_metrics(table_id):
    names = sorted({inst.name for _, inst in RUNS_MATRIX.cell_instances(table_id, SEEDS)})
    return [run_path(n, "metrics.json") for n in names]


def table_target(stem):
    return [f"{TABLE_DIR}/{stem}.tex", f"{TABLE_DIR}/{stem}.csv"]


def figure_inputs(fig):
    fig = int(fig)
    runs = [r.id for r in figure_runs(MATRIX, fig)]     # seed-0 instances (run name = id)
    if fig == 2:
        return [f"{OUT}/heatmaps/{r}.npz" for r in runs]
    if fig == 3:
        return [run_path(r, "pilot.csv") for r in runs]
    return [run_path(r, "model.pth") for r in runs] + [COCO_FILES["val"]]
