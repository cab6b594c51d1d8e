# Training. `pgd train` composes the run's config from its matrix row, trains with mmengine's Runner and writes
# model.pth atomically at the end, so a model.pth that exists is complete; --resume continues an interrupted run
# from the last iter_*.pth in its work dir (mmengine's last_checkpoint).


def train_command(role):
    if config["launcher"] == "pytorch":
        # paper scale: one process per GPU of the job; mmengine initialises the process group from torchrun's env
        launch = (f"{PYTHON} -m torch.distributed.run --standalone --nproc_per_node={{resources.gpu}} "
                  "-m pgd.cli train --launcher pytorch")
    else:
        launch = f"{PGD} train"
    return (
        f"{ENV} PGD_THREADS={{threads}} {launch} --run {{params.run_id}} --profile {PROFILE} "
        f"--matrix {{params.matrix}} --seed {{params.seed}} --work-dir {{params.work_dir}} {{params.teacher}} "
        f"--threads {{threads}} --resume {{params.data_root}} {config['train_args']} > {{log}} 2>&1"
    )


def train_params(name):
    inst = INSTANCES[name]
    teacher = MATRIX.teacher_of(inst)
    return dict(
        run_id=inst.run.id,
        seed=inst.seed,
        work_dir=run_path(name),
        teacher=f"--teacher-dir {run_path(teacher.name)}" if teacher else "",
        data_root=data_root_arg(inst.run.dataset),
    )


def train_inputs(wildcards):
    inst = INSTANCES[wildcards.run]
    teacher = MATRIX.teacher_of(inst)
    return data_files(inst.run.dataset) + ([run_path(teacher.name, "model.pth")] if teacher else [])


rule train_teacher:
    input: train_inputs
    output: run_path("{run}", "model.pth")
    wildcard_constraints: run=TEACHER_RE
    params:
        matrix=MATRIX_FILE,
        run_id=lambda w: train_params(w.run)["run_id"],
        seed=lambda w: train_params(w.run)["seed"],
        work_dir=lambda w: train_params(w.run)["work_dir"],
        teacher="",
        data_root=lambda w: train_params(w.run)["data_root"],
    threads: res("train_teacher", "threads")
    resources: **resources_of("train_teacher")
    log: f"{LOGS}/train/{{run}}.log"
    shell: train_command("teacher")
