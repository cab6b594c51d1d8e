# PKD (Cao et al., NeurIPS 2022): every FPN level imitated through per-channel standardised features, i.e. by
# Pearson correlation (pgd/losses/pkd.py). Detector-agnostic: one setting for all five detectors.
# Values: the paper's one-stage setting (RetinaNet: loss weight 10 on the FPN outputs). The student keeps its own
# initialisation (init_student=False), as in PKD's released configs.
distill = dict(
    init_student=False,
    kd_losses=[dict(type='PKDLoss', loss_weight=10.0, num_levels=5)],
)
