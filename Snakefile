"""PGD (ECCV 2022) reproduction: data -> pretraining -> teachers -> students (each trained + evaluated) -> pilot / heatmaps -> tables, figures -> report.

    snakemake --cores all                                   # everything, mini profile (synthetic data, CPU)
    snakemake --cores all table5                            # one table and only the runs it needs
    snakemake --config profile=paper --workflow-profile workflow/profiles/slurm   # paper scale on SLURM

The experiment matrix (configs/experiments.yaml) is the single source of every run; see docs/pipeline.md.
"""
import os

configfile: os.path.join(workflow.basedir, "workflow/config/default.yaml")

_profile_file = os.path.join(workflow.basedir, "workflow/config", f"{config['profile']}.yaml")
if not os.path.isfile(_profile_file):
    raise ValueError(f"profile {config['profile']!r}: no {_profile_file}; use profile=mini or profile=paper")

# --config values given on the command line still win over the profile file.
configfile: _profile_file


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
