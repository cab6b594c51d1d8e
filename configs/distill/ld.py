# LD (localisation distillation, Zheng et al. CVPR 2022) on GFL's box-distribution head; docs/baselines.md.
# Only GFL has a general-distribution (DFL) box head: LDLoss.check_detector rejects every other detector.
# Values: mmdet 3.3's LDHead (main region only: weight 0.25, T 10, average factor 4). The official R50 recipe adds
# method_overrides {vlr_weight: 0.25, cls_kd_weight: 5.0, imitation_weight: 2.0}. No teacher inheritance.

distill = dict(
    init_student=False,
    kd_losses=[
        dict(
            type='LDLoss',
            loss_weight=0.25,
            temp=10.0,
            avg_factor=4.0,
            vlr_weight=0.0,
            cls_kd_weight=0.0,
            imitation_weight=0.0,
        ),
    ],
)

detector_overrides = dict()
