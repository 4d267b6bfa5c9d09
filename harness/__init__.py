"""The quantbench harness: configs in, measured long-format result tables out.

A case flows through the packages in this order (each imports only those before it; the CLI sits
on top): config (the YAML schema), ops and registry (what each op computes, checks and counts; which
implementations exist, in which role), execution (expand, prepare, check, time), results (the run
folder and its columns), analysis (tables, compare), reporting (plots, report), cli.
"""
