# Students: plain R50 / MobileNetV2 detectors and the distilled runs (which wait for their teacher's model.pth).
# The job is a teacher's (rules/teachers.smk); only the runs it matches, the teacher directory and the resources
# differ.


use rule train_teacher as train_student with:
    wildcard_constraints: run=STUDENT_RE
    params:
        teacher=lambda w: train_params(w.run)["teacher"],
        env="",
    priority: 0
    threads: res("train_student", "threads")
    resources: **resources_of("train_student")


# A run that composes to the same recipe as an earlier one (common.smk, LINKED) is that run: its dir becomes a
# relative link to the trained one's, so metrics, provenance and model are read under its own name.
rule link_run:
    input:
        model=lambda w: run_path(LINKED[w.run], "model.pth"),
        metrics=lambda w: run_path(LINKED[w.run], "metrics.json"),
    output:
        model=run_path("{run}", "model.pth"),
        metrics=run_path("{run}", "metrics.json"),
    wildcard_constraints: run=LINKED_RE
    params:
        link=lambda w: run_path(w.run),
        target=lambda w: LINKED[w.run],
        digest=lambda w: EXPECTED[w.run].digest,
    localrule: True
    shell: "rm -rf {params.link} && ln -s {params.target} {params.link}"
