# Tables 1-7: LaTeX (booktabs, the paper's layout, gains over the student, the paper's numbers beside ours) + CSV.

PAPER_NUMBERS = os.path.join(workflow.basedir, "pgd/report/paper_numbers.csv")


TABLE_FILES = [f"{TABLE_DIR}/{stem}.{ext}" for stem in TABLE_STEMS for ext in ("tex", "csv")]


rule table:
    input:
        metrics=lambda w: table_metrics({**TABLE_STEMS, **EXTRA_STEMS}[w.stem]),
        paper=PAPER_NUMBERS,
    output:
        tex=f"{TABLE_DIR}/{{stem}}.tex",
        csv=f"{TABLE_DIR}/{{stem}}.csv",
    wildcard_constraints: stem="|".join([*TABLE_STEMS, *EXTRA_STEMS])
    params:
        table_id=lambda w: {**TABLE_STEMS, **EXTRA_STEMS}[w.stem],
        seeds=" ".join(map(str, SEEDS)),
    threads: res("table", "threads")
    resources: **resources_of("table")
    log: f"{LOGS}/tables/{{stem}}.log"
    shell:
        f"{ENV} {PROVENANCE_ENV} {PGD} table --table {{params.table_id}} --profile {PROFILE} --results {RESULTS} "
        f"--matrix {MATRIX_FILE} --seeds {{params.seeds}} --out-dir {TABLE_DIR} > {{log}} 2>&1"


rule tables:
    input: TABLE_FILES

# one named target per table, from the matrix's table list (pgd.matrix.TABLES): `snakemake table5`
for _table_id, (_stem, _rule_name) in TABLES.items():
    rule:
        name: _rule_name
        input: table_target(_stem)

rule table6:
    input: table_target("table6_k") + table_target("table6_alpha")

# the extra methods (configs/distill/ files no matrix row uses, e.g. PKD) beside the detector's teacher, student and
# PGD runs (pgd.matrix.with_extras; docs/adding-a-method.md); not part of `all`
rule extras:
    input: table_target(EXTRA_TABLE)
