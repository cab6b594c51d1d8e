"""PGD (ECCV 2022) reproduction: data -> pretraining -> teachers -> students (each trained + evaluated) -> pilot / heatmaps -> tables, figures -> report.

    snakemake --cores all                                   # everything, mini profile (synthetic data, CPU)
    snakemake --cores all table5                            # one table and only the runs it needs
    snakemake --config profile=paper --workflow-profile workflow/profiles/slurm   # paper scale on SLURM

The experiment matrix (configs/experiments.yaml) is the single source of every run; see docs/pipeline.md.
"""
import os
import sys

from pgd.errors import UserError, report_user_error
from pgd.workflow_config import check_config

configfile: os.path.join(workflow.basedir, "workflow/config/default.yaml")

_profile_file = os.path.join(workflow.basedir, "workflow/config", f"{config['profile']}.yaml")
if not os.path.isfile(_profile_file):
    print(f"snakemake: error: profile {config['profile']!r}: no {_profile_file}; use profile=mini or profile=paper",
          file=sys.stderr)
    sys.exit(2)

# --config values given on the command line still win over the profile file.
configfile: _profile_file

# A misspelt or mistyped key fails here, naming it and the valid keys, before any job is planned (user errors in
# the Snakefile and the rules print one message and exit 2, as `pgd` does).
try:
    check_config(config, os.path.join(workflow.basedir, "workflow/schemas/config.schema.yaml"))
except UserError as err:
    sys.exit(report_user_error("snakemake", err))


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/pretrain.smk"
include: "workflow/rules/teachers.smk"
include: "workflow/rules/students.smk"
include: "workflow/rules/pilot.smk"
include: "workflow/rules/tables.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        REPORT,
        TABLE_FILES,
        FIGURE_FILES,
