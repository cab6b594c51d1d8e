# Fig. 3's pilot (AP after masking the top-X% quality predictions) and Fig. 2's quality heatmaps, per COCO teacher.


rule pilot_run:
    input:
        model=run_path("{run}", "model.pth"),
        data=COCO_FILES["val"],
    output: run_path("{run}", "pilot.csv")
    wildcard_constraints: run=COCO_TEACHER_RE
    params: work_dir=lambda w: run_path(w.run)
    threads: res("pilot", "threads")
    resources: **resources_of("pilot")
    log: f"{LOGS}/pilot/{{run}}.log"
    shell: f"{ENV} PGD_THREADS={{threads}} {PGD} pilot --run-dir {{params.work_dir}} > {{log}} 2>&1"


rule heatmap:
    input:
        model=run_path("{run}", "model.pth"),
        data=COCO_FILES["val"],
    output: f"{OUT}/heatmaps/{{run}}.npz"
    wildcard_constraints: run=COCO_TEACHER_RE
    params:
        work_dir=lambda w: run_path(w.run),
        samples=config["figures"]["samples"],
    threads: res("heatmap", "threads")
    resources: **resources_of("heatmap")
    log: f"{LOGS}/heatmap/{{run}}.log"
    shell:
        f"{ENV} PGD_THREADS={{threads}} {PGD} heatmap --run-dir {{params.work_dir}} --out {{output}} "
        f"--num-images {{params.samples}} > {{log}} 2>&1"


PILOT_FILES = [run_path(i.name, "pilot.csv") for i in COCO_TEACHERS]
HEATMAP_FILES = [f"{OUT}/heatmaps/{i.name}.npz" for i in COCO_TEACHERS]
