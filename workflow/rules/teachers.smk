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
