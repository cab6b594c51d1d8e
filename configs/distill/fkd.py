# FKD / FBKD (attention-guided + non-local distillation, Zhang & Ma ICLR 2021) on the FPN outputs;
# docs/baselines.md. Values: variant (a) = MMRazor's port of the supplement code (docs/methods.md §4.3): T 0.5,
# w_am 7e-5, w_c = w_s = 4e-3, w_nl 7e-5, channel mask unused. method_overrides {variant: b} gives T 0.1, the channel
# mask in the feature term and all weights x6. NL blocks per level (C/reduction, max-pool): P3 (64, 8), P4 (64, 4),
# P5-P7 (128, 2) [our choice of pool sizes for P3-P7]. No teacher inheritance.

distill = dict(
    init_student=False,
    kd_losses=[
        dict(
            type='FKDLoss',
            in_channels=256,
            num_levels=5,
            variant='a',
            nl_cfg=((4, 8), (4, 4), (2, 2), (2, 2), (2, 2)),
        ),
    ],
)

detector_overrides = dict()
