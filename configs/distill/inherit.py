# "Inherit only": the control row of Table 1. The student starts from the teacher's neck and head, as PGD and FGD
# do (and, under a profile with student_init='teacher', every KD method), and then trains on its detector's own
# losses alone: no KD term and no teacher forward pass. A KD row minus this row is what its loss adds beyond
# inheriting; this row minus the Student row is what inheriting alone gives (docs/protocol.md).
control = True

distill = dict(
    init_student=True,
    teacher_guided_assign=False,   # DDOD: the student's own label assignment, not the teacher-guided one
    kd_losses=[],
)
