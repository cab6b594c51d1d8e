# Evaluation: metrics.json (COCO AP family, or MR / AP / JI on CrowdHuman) per run, logged into the run's MLflow run.


rule eval:
    input:
        model=run_path("{run}", "model.pth"),
        data=lambda w: data_files(INSTANCES[w.run].run.dataset),
    output: run_path("{run}", "metrics.json")
    wildcard_constraints: run=RUN_RE
    params:
        work_dir=lambda w: run_path(w.run),
        extra=config["eval_args"],
    threads: res("eval", "threads")
    resources: **resources_of("eval")
    log: f"{LOGS}/eval/{{run}}.log"
    shell:
        f"{ENV} PGD_THREADS={{threads}} {PGD} eval --run-dir {{params.work_dir}} {{params.extra}} > {{log}} 2>&1"
