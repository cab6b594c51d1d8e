# Tables 1-7: LaTeX (booktabs, the paper's layout, gains over the student, the paper's numbers beside ours) + CSV.

PAPER_NUMBERS = os.path.join(workflow.basedir, "pgd/report/paper_numbers.csv")


TABLE_FILES = [f"{TABLE_DIR}/{stem}.{ext}" for stem in TABLE_STEMS for ext in ("tex", "csv")]


rule table:
    input:
        metrics=lambda w: table_metrics(TABLE_STEMS[w.stem]),
        paper=PAPER_NUMBERS,
    output:
        tex=f"{TABLE_DIR}/{{stem}}.tex",
        csv=f"{TABLE_DIR}/{{stem}}.csv",
    wildcard_constraints: stem="|".join(TABLE_STEMS)
    params:
        table_id=lambda w: TABLE_STEMS[w.stem],
        seeds=" ".join(map(str, SEEDS)),
    threads: res("table", "threads")
    resources: **resources_of("table")
    log: f"{LOGS}/tables/{{stem}}.log"
    shell:
        f"{ENV} {PGD} table --table {{params.table_id}} --profile {PROFILE} --results {RESULTS} "
        f"--matrix {MATRIX_FILE} --seeds {{params.seeds}} --out-dir {TABLE_DIR} > {{log}} 2>&1"


rule tables:
    input: TABLE_FILES

rule table1:
    input: table_target("table1")

rule table2:
    input: table_target("table2")

rule table3:
    input: table_target("table3")

rule table4:
    input: table_target("table4")

rule table5:
    input: table_target("table5")

rule table6_k:
    input: table_target("table6_k")

rule table6_alpha:
    input: table_target("table6_alpha")

rule table6:
    input: table_target("table6_k") + table_target("table6_alpha")

rule table7:
    input: table_target("table7")
