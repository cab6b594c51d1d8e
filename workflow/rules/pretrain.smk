# Backbone pretraining (profiles that define `pretrain`, i.e. mini): the stand-in for the paper's ImageNet weights.
# One job per backbone (r50, r101, mbv2) before any detector trains; every teacher and student of that backbone
# starts from its checkpoint (configs/profiles/mini.py, `pgd pretrain`).

if PRETRAIN:

    rule pretrain_backbone:
        output: f"{PRETRAINED_DIR}/{{backbone}}.pth"
        wildcard_constraints: backbone="r50|mbv2"
        params: extra=config["pretrain_args"], recipe=PRETRAIN_RECIPE
        priority: 20
        threads: res("pretrain", "threads")
        resources: **resources_of("pretrain")
        log: f"{LOGS}/pretrain/{{backbone}}.log"
        shell:
            f"{ENV} PGD_THREADS={{threads}} {PGD} pretrain --backbone {{wildcards.backbone}} --profile {PROFILE} "
            f"--out {{output}} --results {RESULTS} --threads {{threads}} {{params.extra}} > {{log}} 2>&1"

    # r101 gates the teachers, which gate nearly every student: it must start first (with one shared rule
    # Snakemake started r50 and mbv2 first and r101 ~3 min late)
    use rule pretrain_backbone as pretrain_backbone_r101 with:
        wildcard_constraints: backbone="r101"
        priority: 30
