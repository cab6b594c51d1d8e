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
