# FGD (Focal and Global Distillation, Yang et al. CVPR 2022) on the five FPN levels; docs/baselines.md.
# pgd.config.compose_config updates every KD loss with detector_overrides[<detector>], [<detector>_<backbone>],
# [<detector>_<dataset>] (most specific last), then with the matrix row's method_overrides.
# Values: the official FGD configs (docs/methods.md §4.1). There are official RetinaNet, GFL and FCOS configs only:
# ATSS and DDOD (anchor-based) take the RetinaNet/GFL values, AutoAssign (anchor-free) the FCOS values [our choice].
# The official configs inherit the teacher's neck and head (init_student=True).

_anchor_based = dict(temp=0.5, alpha_fg=1e-3, beta_bg=5e-4, gamma_att=5e-4, lambda_glob=5e-6)
_anchor_free = dict(temp=0.8, alpha_fg=1.6e-3, beta_bg=8e-4, gamma_att=8e-4, lambda_glob=8e-6)

distill = dict(
    init_student=True,
    kd_losses=[
        dict(
            type='FGDLoss',
            in_channels=256,
            num_levels=5,
            box_scale='batch_input_shape',   # 'img_shape' = the official (stretching) box mapping
            **_anchor_based,
        ),
    ],
)

detector_overrides = dict(
    atss=_anchor_based,
    ddod=_anchor_based,
    gfl=_anchor_based,          # the official GFL config uses the RetinaNet values
    fcos=_anchor_free,
    autoassign=_anchor_free,
)
