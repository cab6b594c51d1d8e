# Figures 1, 2, 3, 5 (PNG + PDF): regions on sample images, teacher quality heatmaps, the pilot curves, detections.


FIGURE_FILES = [f"{FIG_DIR}/fig{n}.{ext}" for n in FIGURES for ext in ("png", "pdf")]


rule figure:
    input: lambda w: figure_inputs(w.n)
    output:
        png=f"{FIG_DIR}/fig{{n}}.png",
        pdf=f"{FIG_DIR}/fig{{n}}.pdf",
    wildcard_constraints: n="|".join(map(str, FIGURES))
    params: samples=config["figures"]["samples"]
    threads: res("figure", "threads")
    resources: **resources_of("figure")
    log: f"{LOGS}/figures/fig{{n}}.log"
    shell:
        f"{ENV} PGD_THREADS={{threads}} {PGD} figure --fig {{wildcards.n}} --profile {PROFILE} --results {RESULTS} "
        f"--matrix {MATRIX_FILE} --num-images {{params.samples}} --out-dir {FIG_DIR} > {{log}} 2>&1"


rule figures:
    input: FIGURE_FILES

rule pilot:
    input: PILOT_FILES, f"{FIG_DIR}/fig3.png", f"{FIG_DIR}/fig3.pdf"

rule heatmaps:
    input: HEATMAP_FILES, f"{FIG_DIR}/fig2.png", f"{FIG_DIR}/fig2.pdf"

rule teachers:
    input: [run_path(i.name, "metrics.json") for i in TEACHERS]
