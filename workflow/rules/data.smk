# mini profile: generate the embedded synthetic sets once (shared by every run). The paper profile reads
# COCO / CrowdHuman from coco_root / crowdhuman_root instead and has no data jobs.

if config["data"]["generate"]:

    rule data_coco:
        output:
            train=COCO_FILES["train"],
            val=COCO_FILES["val"],
        params:
            out=lambda w, output: os.path.dirname(os.path.dirname(output.train)),
            args=config["data"]["coco_args"],
        threads: res("data", "threads")
        resources: **resources_of("data")
        log: f"{LOGS}/data/coco.log"
        shell:
            f"{ENV} PGD_THREADS={{threads}} {PGD} data coco --out {{params.out}} {{params.args}} > {{log}} 2>&1"

    rule data_crowdhuman:
        output:
            train=CROWD_FILES["train"],
            val=CROWD_FILES["val"],
        params:
            out=lambda w, output: os.path.dirname(output.train),
            args=config["data"]["crowdhuman_args"],
        threads: res("data", "threads")
        resources: **resources_of("data")
        log: f"{LOGS}/data/crowdhuman.log"
        shell:
            f"{ENV} PGD_THREADS={{threads}} {PGD} data crowdhuman --out {{params.out}} {{params.args}} > {{log}} 2>&1"
