"""The "fastest by M" tables (harness/analysis/choice.py): which implementation a user should pick,
from a run's long rows. Built here from rows whose answer is known by hand."""

import pandas as pd
import pytest

from quantbench.harness.analysis.choice import choice_table, choice_tables
from quantbench.harness.analysis.tables import summary_markdown

W4 = dict(bits=4, scheme="asymmetric", granularity="group", group_size=128)
NF4 = dict(bits=4, scheme="nf4", granularity="group", group_size=64)
W8 = dict(bits=8, scheme="symmetric", granularity="channel", group_size=None)
DENSE = dict(bits=None, scheme=None, granularity=None, group_size=None)


def row(impl, role, m, ms, fmt, status="ok", err=0.1, bits_per_weight=4.25):
    return dict(op="matmul", impl=impl, role=role, status=status, message="" if status == "ok" else "why", M=m,
                N=256, K=512, shape_name="o_proj", dtype="bfloat16", ms=ms if status != "skipped" else None,
                bits_per_weight=bits_per_weight, out_rel_err=err, **fmt)


def rows():
    return pd.DataFrame([
        row("fp16", "baseline", 1, 0.040, DENSE, bits_per_weight=16.0, err=0.002),
        row("triton", "candidate", 1, 0.030, W4),
        row("triton", "candidate", 1, 0.045, NF4, err=0.09),
        row("tinygemm", "peer", 1, 0.020, W4),        # fastest at M = 1
        row("gemlite", "peer", 1, 0.010, W4, status="error", err=0.5),  # faster still, but wrong
        row("torch", "reference", 1, 0.005, W4),      # a yardstick, never the pick
        row("fp16", "baseline", 16, 0.050, DENSE, bits_per_weight=16.0, err=0.002),
        row("triton", "candidate", 16, 0.025, W4),
        row("triton", "candidate", 16, 0.020, NF4, err=0.09),  # fastest at M = 16
        row("tinygemm", "peer", 16, 0.060, W4),
        row("gemlite", "peer", 16, None, W4, status="skipped"),
        row("fp16", "baseline", 1, 0.040, DENSE, bits_per_weight=16.0, err=0.002) | {"dtype": "float16"},
        row("triton", "candidate", 1, 0.025, W8, bits_per_weight=8.0, err=0.009) | {"dtype": "float16"},
        row("bnb_int8", "peer", 1, 0.100, W8, bits_per_weight=8.0, err=0.012) | {"dtype": "float16"},
    ])


def test_the_fastest_verified_implementation_by_m_with_every_other_beside_it():
    table = choice_table(rows(), "matmul", 4).set_index("M")
    assert list(table.columns[:7]) == ["shape", "dtype", "dense us", "fastest", "x dense", "bits/weight",
                                       "out rel err"]
    one = table.loc[1]
    # gemlite's 10 us row failed verification and the reference is a yardstick: tinygemm is the pick
    assert one["fastest"] == "tinygemm" and one["x dense"] == pytest.approx(2.0)
    assert one["dense us"] == pytest.approx(40.0) and one["out rel err"] == 0.1
    assert one["gemlite"] == "error" and "torch" not in table.columns
    # the project's kernel runs two 4-bit formats here: each is its own column, named by its format
    assert one["triton int4 asym g128"] == "30.0 (1.33x)" and one["triton nf4 g64"] == "45.0 (0.89x)"
    sixteen = table.loc[16]
    assert sixteen["fastest"] == "triton nf4 g64" and sixteen["x dense"] == pytest.approx(2.5)
    assert sixteen["bits/weight"] == 4.25 and sixteen["out rel err"] == 0.09
    assert sixteen["gemlite"] == "-"  # skipped: its reason is in the run's "not ok" table
    # the 8-bit rows are another table, with their own implementations
    assert "bnb_int8" not in table.columns
    eight = choice_table(rows(), "matmul", 8).iloc[0]
    assert eight["fastest"] == "triton" and eight["bnb_int8"] == "100.0 (0.40x)" and eight["dtype"] == "float16"


def test_a_run_without_peers_has_no_choice_to_show_and_one_with_them_has_one_per_bit_width():
    df = rows()
    titles = [title for title, _ in choice_tables(df, "matmul")]
    assert titles == ["matmul, 4-bit weights: the fastest by M", "matmul, 8-bit weights: the fastest by M"]
    assert choice_tables(df[df["role"] != "peer"], "matmul") == []
    # nothing verified to pick: no row (never an error row made the fastest)
    wrong = df[(df["M"] == 1) & (df["bits"].isna() | (df["impl"] == "gemlite"))]
    assert choice_table(wrong, "matmul", 4).empty


def test_summary_md_carries_the_choice_of_a_run_with_peers():
    df = rows().assign(timing_valid=True, depth=None, gbps=1.0, tflops=1.0, path=None, snr_db=20.0,
                       rel_err=0.1, method_snr_db=20.0, kernel_snr_db=60.0)
    text = summary_markdown(df, {"run_id": "r", "env": {}, "calibration": {}})
    assert "## matmul, 4-bit weights: the fastest by M" in text
    block = text.split("## matmul, 4-bit weights: the fastest by M")[1].split("##")[0]
    assert "| o_proj 256x512 | bfloat16 | 1 | 40 | tinygemm | 2 |" in block
