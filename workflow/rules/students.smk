# Students: plain R50 / MobileNetV2 detectors and the distilled runs (which wait for their teacher's model.pth).


rule train_student:
    input: train_inputs
    output:
        model=run_path("{run}", "model.pth"),
        metrics=run_path("{run}", "metrics.json"),
    wildcard_constraints: run=STUDENT_RE
    params:
        matrix=MATRIX_FILE,
        run_id=lambda w: train_params(w.run)["run_id"],
        seed=lambda w: train_params(w.run)["seed"],
        work_dir=lambda w: train_params(w.run)["work_dir"],
        teacher=lambda w: train_params(w.run)["teacher"],
        data_root=lambda w: train_params(w.run)["data_root"],
        pretrained=lambda w: train_params(w.run)["pretrained"],
        extra=config["train_args"],
        env="",
    threads: res("train_student", "threads")
    resources: **resources_of("train_student")
    log: f"{LOGS}/train/{{run}}.log"
    shell: train_command()
