# FRS (feature-richness score, Du et al. NeurIPS 2021): FPN features + class logits; docs/baselines.md.
# Values: the official configs (docs/methods.md §4.2): GFL w_feat 0.1 / w_cls 0.05, FCOS 0.01 / 0.05, warm-up 500
# iterations. ATSS and DDOD take the GFL values [our choice: like GFL they have one anchor and 80 class channels per
# location, whereas RetinaNet's 0.005 / 0.02 were set for 9 anchors x 80 channels]; AutoAssign takes the FCOS values.
# warmup_ref_iters: the warm-up keeps its share of mmdet's 1x schedule at batch 16 (87,960 iterations) on shorter
# runs (pgd.losses.frs.scaled_warmup): 250 iterations at the paper's batch 32, about 2 on the mini profile.

_gfl_like = dict(w_feat=0.1, w_cls=0.05)
_fcos_like = dict(w_feat=0.01, w_cls=0.05)

distill = dict(
    init_student=False,
    kd_losses=[
        dict(
            type='FRSLoss',
            in_channels=256,
            num_levels=5,
            warmup_iters=500,
            warmup_ref_iters=87960,
            **_gfl_like,
        ),
    ],
)

detector_overrides = dict(
    gfl=_gfl_like,
    atss=_gfl_like,
    ddod=_gfl_like,
    fcos=_fcos_like,
    autoassign=_fcos_like,
)
