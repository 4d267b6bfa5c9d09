"""Documents from finished runs: the report (report.py) laid out as blocks (document.py), its
figures (speed_plots.py, accuracy_plots.py, fit_plots.py, on figures.py's style) and the weights a
run quantized, drawn again from its config (weight_draws.py). Never imports execution or Triton."""
