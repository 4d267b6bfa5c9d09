"""The quantbench harness: configs in, measured long-format result tables out."""
