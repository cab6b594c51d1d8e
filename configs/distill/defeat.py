# DeFeat (decoupled fg/bg feature imitation, Guo et al. CVPR 2021) on the FPN outputs; docs/baselines.md.
# Values: the only official config (VOC Faster R-CNN, docs/methods.md §4.4): hint_neck_w 3, hint_neck_back_w 12,
# head part off (its one-stage path is incomplete in the public code). The FPN level rule with 56 px was designed
# for P2-P6; level_assign='all' (box mask on every level) is offered as method_overrides. No teacher inheritance.

distill = dict(
    init_student=False,
    kd_losses=[
        dict(
            type='DeFeatLoss',
            in_channels=256,
            num_levels=5,
            strides=(8, 16, 32, 64, 128),
            w_fg=3.0,
            w_bg=12.0,
            level_assign='fpn_rule',
            canonical_scale=56.0,
            head_kd=False,          # True: decoupled class-logit KL, w_head_fg = w_head_bg = 2, T = 1
        ),
    ],
)

detector_overrides = dict()
