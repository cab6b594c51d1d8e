# Training and evaluation, one job per run. `pgd train` composes the run's config from its matrix row, trains with
# mmengine's Runner and writes model.pth atomically at the end, so a model.pth that exists is complete; --resume
# continues an interrupted run from the last iter_*.pth in its work dir (mmengine's last_checkpoint). Then the same
# job tests model.pth and writes metrics.json (COCO AP family, or MR / AP / JI on CrowdHuman) into the run's MLflow
# run: in the training process (`--eval`) where it runs alone, as a `pgd eval` after torchrun otherwise.


rule train_teacher:
    input: train_inputs
    output:
        model=run_path("{run}", "model.pth"),
        metrics=run_path("{run}", "metrics.json"),
    wildcard_constraints: run=TEACHER_RE
    params:
        matrix=MATRIX_FILE,
        run_id=lambda w: train_params(w.run)["run_id"],
        seed=lambda w: train_params(w.run)["seed"],
        work_dir=lambda w: train_params(w.run)["work_dir"],
        teacher="",
        data_root=lambda w: train_params(w.run)["data_root"],
        pretrained=lambda w: train_params(w.run)["pretrained"],
        # not on the command line: the run's identity, so that a changed configuration reruns it
        digest=lambda w: train_params(w.run)["digest"],
        extra=config["train_args"],
        env=teacher_env(),
    # teachers gate 73 of the 79 students: start them before the plain students that could fill the cores
    priority: 10
    threads: res("train_teacher", "threads")
    resources: **resources_of("train_teacher")
    log: f"{LOGS}/train/{{run}}.log"
    shell: train_command()


# A trained teacher's outputs on its students' training images, both flips (pgd.models.teacher_cache): built once
# for the students of a profile with teacher_cache (the mini one), which read it instead of running the teacher.
# Any run can be a teacher (Table 4's are plain students), hence no constraint on the run name.
rule teacher_cache:
    input:
        model=run_path("{run}", "model.pth"),
        data=lambda w: data_files(INSTANCES[w.run].run.dataset),
    output: run_path("{run}", TEACHER_CACHE)
    params:
        work_dir=lambda w: run_path(w.run),
        data_root=lambda w: data_root_arg(INSTANCES[w.run].run.dataset),
        extra=set_args(config["train_args"]),
        signatures=lambda w: cache_signatures(w.run),
    priority: 10
    threads: res("teacher_cache", "threads")
    resources: **resources_of("teacher_cache")
    log: f"{LOGS}/teacher_cache/{{run}}.log"
    shell:
        f"{ENV} PGD_THREADS={{threads}} {PGD} teacher-cache --teacher-dir {{params.work_dir}} --profile {PROFILE} "
        f"{{params.data_root}} {{params.extra}} > {{log}} 2>&1"
