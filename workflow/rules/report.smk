# The report page: every table (LaTeX + markdown) and figure of the profile, and the settings each table used.


rule report_page:
    input:
        tables=TABLE_FILES,
        figures=FIGURE_FILES,
    output: REPORT
    threads: res("report", "threads")
    resources: **resources_of("report")
    log: f"{LOGS}/report.log"
    shell:
        f"{ENV} {PROVENANCE_ENV} {PGD} report --profile {PROFILE} --results {RESULTS} --matrix {MATRIX_FILE} "
        f"--seeds {' '.join(map(str, SEEDS))} --out {{output}} > {{log}} 2>&1"


rule report:
    input: REPORT
