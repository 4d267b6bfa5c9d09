"""Reading finished runs: the tables people read (tables.py), run against run with verdicts a CI
gate can trust (compare.py, thresholds.py), implementation against implementation and GPU against
GPU (gpu_views.py), how a case is labelled everywhere (labels.py), and the memory planner behind `quantbench fit` (memory_planner.py). Reads
results; never imports execution, so it runs where no GPU toolchain is installed."""
