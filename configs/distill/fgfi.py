# FGFI (fine-grained feature imitation, Wang et al. CVPR 2019) on every FPN level; docs/baselines.md.
# Values (docs/methods.md §4.5): lambda 0.01, psi 0.5, adapter 3x3 without ReLU, imitation off for the first 400
# iterations. Anchors: ATSS, GFL and DDOD use their own single 8s square per location; FCOS and AutoAssign get
# virtual 8s squares on their points, used only for the mask [our choice, the ATSS-style option of
# docs/methods.md §4.5].
# warmup_ref_iters: the warm-up keeps its share of mmdet's 1x schedule at batch 16 on shorter runs
# (pgd.losses.frs.scaled_warmup). No teacher inheritance.

distill = dict(
    init_student=False,
    kd_losses=[
        dict(
            type='FGFILoss',
            in_channels=256,
            num_levels=5,
            strides=(8, 16, 32, 64, 128),
            loss_weight=0.01,
            psi=0.5,
            anchor_base_scale=8.0,
            anchor_scales=(1.0,),
            anchor_ratios=(1.0,),
            level_assign='all',     # 'fpn_rule': each GT only on its DeFeat level (DeFeat's re-implementation)
            warmup_iters=400,
            warmup_ref_iters=87960,
        ),
    ],
)

detector_overrides = dict()
