"""Raw samples are stored compressed once a run finishes (samples.jsonl.gz); runs written before
that keep a plain samples.jsonl. Every reader takes both forms alike, and the committed results
stay within their size budget."""

import gzip
import importlib.util
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from quantbench.harness.analysis.tables import summary_markdown
from quantbench.harness.analysis.compare import compare_runs
from quantbench.harness.results.merge import merge_runs
from quantbench.harness.results.pytest_benchmark import to_pytest_benchmark
from quantbench.harness.results import RunFolderError, RunWriter, read_samples, samples_path

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("detector_power", ROOT / "scripts" / "detector_power.py")
dp = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(dp)

GPU = {"gpu": "NVIDIA H200", "gpu_uuid": "GPU-0"}
CONFIG = {"name": "st", "seed": 0, "sweep": {"op": ["quantize", "dequantize"]}}
RESULTS_BUDGET_BYTES = 20 * 1000**2  # what `git ls-files results` may add up to


def make_run(root: Path, name: str, slowdown: float = 1.0, cases: tuple[str, ...] = ("quantize", "dequantize"),
             config: dict = CONFIG) -> Path:
    """A finished run folder of GPU rows written by the harness's own RunWriter, 200 seeded
    samples a row (the same seed in every run, so two runs differ only by `slowdown`)."""
    writer = RunWriter.create(root, name, {"config": config, "env": GPU})
    for c, op in enumerate(cases):
        samples = 0.010 * slowdown * (1 + 0.01 * np.random.default_rng([3, c]).standard_normal(200))
        row = {"op": op, "impl": "triton", "bits": 4, "scheme": "asymmetric", "granularity": "channel",
               "dtype": "float16", "N": 64, "K": 64, "gpu": GPU["gpu"], "status": "ok",
               "ms": float(np.median(samples)), "timing_valid": True, "n_samples": 200, "snr_db": 20.0}
        writer.append_case(f"{op}-64", [row], [tuple(samples.tolist())])
    writer.finish(lambda df, meta: "")
    return writer.path


def as_plain(run: Path, dest: Path) -> Path:
    """A copy of a finished run in the form written before compression: a plain samples.jsonl."""
    shutil.copytree(run, dest)
    (dest / "samples.jsonl").write_bytes(gzip.decompress((dest / "samples.jsonl.gz").read_bytes()))
    (dest / "samples.jsonl.gz").unlink()
    return dest


@pytest.fixture
def runs(tmp_path):
    """The same base and 20%-slower candidate, each in the compressed (new) and plain (old) form."""
    base = make_run(tmp_path / "new", "base")
    cand = make_run(tmp_path / "new", "cand", slowdown=1.2)
    return {"new": (base, cand), "old": (as_plain(base, tmp_path / "old" / "base"),
                                         as_plain(cand, tmp_path / "old" / "cand"))}


def test_a_finished_run_keeps_its_samples_compressed_and_complete(tmp_path):
    run = make_run(tmp_path, "r")
    assert (run / "samples.jsonl.gz").is_file() and not (run / "samples.jsonl").exists()
    records = read_samples(run)
    assert [r["op"] for r in records] == ["quantize", "dequantize"]
    assert all(len(r["samples_ms"]) == 200 for r in records)
    # the same samples write the same bytes (no timestamp in the gzip header)
    again = make_run(tmp_path / "again", "r")
    assert (again / "samples.jsonl.gz").read_bytes() == (run / "samples.jsonl.gz").read_bytes()


def test_both_forms_read_the_same_records(runs):
    (new, _), (old, _) = runs["new"], runs["old"]
    assert samples_path(new).name == "samples.jsonl.gz" and samples_path(old).name == "samples.jsonl"
    assert read_samples(new) == read_samples(old) and len(read_samples(new)) == 2


@pytest.mark.parametrize("base_form, cand_form", [("new", "new"), ("old", "old"), ("old", "new"), ("new", "old")])
def test_compare_judges_latency_from_either_form(runs, base_form, cand_form):
    verdicts = compare_runs(runs[base_form][0], runs[cand_form][1])
    # the 20% slowdown can only be a regression if the raw samples were found and tested
    assert verdicts["latency"].tolist() == ["regression", "regression"] and verdicts["latency_judged"].all()
    assert (verdicts["p_value"] < 1e-6).all()


def test_merge_reads_both_forms_and_writes_the_compressed_one(tmp_path):
    config = {**CONFIG, "name": "m"}
    part1 = make_run(tmp_path / "p", "m1", cases=("quantize",), config=config)
    part2 = as_plain(make_run(tmp_path / "q", "m2", cases=("dequantize",), config=config), tmp_path / "old2")
    merged = merge_runs([part1, part2], tmp_path / "merged", summary_markdown)
    assert (merged / "samples.jsonl.gz").is_file() and not (merged / "samples.jsonl").exists()
    assert read_samples(merged) == read_samples(part1) + read_samples(part2)


def test_pytest_benchmark_export_carries_the_samples_of_either_form(runs):
    exported = {form: to_pytest_benchmark(runs[form][0]) for form in ("new", "old")}
    data = [[b["stats"]["data"] for b in exported[form]["benchmarks"]] for form in ("new", "old")]
    assert data[0] == data[1] and all(len(d) == 200 for d in data[0])


@pytest.mark.parametrize("form", ["new", "old"])
def test_resume_keeps_the_samples_of_either_form(runs, form):
    run = runs[form][0]
    before = read_samples(run)
    writer = RunWriter.resume(run)
    assert (run / "samples.jsonl").is_file() and not (run / "samples.jsonl.gz").exists()  # appending again
    assert read_samples(run) == before
    writer.finish(lambda df, meta: "")
    assert samples_path(run).name == "samples.jsonl.gz" and read_samples(run) == before


def test_the_plain_file_wins_while_both_exist(runs):
    """A finish cut between writing the .gz and removing the plain file, or a resume that has
    appended since: the plain file holds the newer lines."""
    run = runs["new"][0]
    lines = gzip.decompress((run / "samples.jsonl.gz").read_bytes()).decode().splitlines(keepends=True)
    (run / "samples.jsonl").write_text(lines[0])
    assert read_samples(run) == [json.loads(lines[0])]


def test_detector_power_takes_either_form_and_writes_the_compressed_one(tmp_path):
    new = [make_run(tmp_path / "aa", f"aa{i}") for i in range(3)]
    old = [as_plain(make_run(tmp_path / "aa", f"ab{i}"), tmp_path / "old" / f"ab{i}") for i in range(3)]
    assert dp.check_runs(new + old) == new + old
    for run in (new[0], old[0]):
        slowed = dp.slowed_copy(run, 1.5, tmp_path / f"slow-{run.name}")
        assert (slowed / "samples.jsonl.gz").is_file()
        assert [r["samples_ms"] for r in read_samples(slowed)] == \
               [[s * 1.5 for s in r["samples_ms"]] for r in read_samples(run)]


def test_a_damaged_compressed_file_names_the_file(runs):
    run = runs["new"][0]
    data = (run / "samples.jsonl.gz").read_bytes()
    (run / "samples.jsonl.gz").write_bytes(data[: len(data) // 2])  # cut short
    with pytest.raises(RunFolderError, match=r"samples\.jsonl\.gz: not a readable gzip file"):
        read_samples(run)


def _tracked_bytes(pathspec: str) -> int:
    listed = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z", pathspec], capture_output=True)
    if listed.returncode != 0:
        pytest.skip("not a git checkout: the committed results cannot be measured")
    names = [n for n in listed.stdout.decode().split("\0") if n]
    return sum((ROOT / n).stat().st_size for n in names if (ROOT / n).is_file())


def test_committed_results_stay_within_their_budget():
    size = _tracked_bytes("results")
    assert size > 0, "no committed results found"
    assert size <= RESULTS_BUDGET_BYTES, (
        f"`git ls-files results` adds up to {size / 1e6:.1f} MB, over the {RESULTS_BUDGET_BYTES / 1e6:.0f} MB "
        f"budget: prune superseded runs (git history keeps them; say which commit in results/README.md) "
        f"and keep samples compressed")


def test_committed_runs_store_their_samples_compressed():
    listed = subprocess.run(["git", "-C", str(ROOT), "ls-files", "results"], capture_output=True, text=True)
    if listed.returncode != 0:
        pytest.skip("not a git checkout")
    plain = [n for n in listed.stdout.splitlines() if n.endswith("samples.jsonl")]
    assert not plain, f"committed plain samples (compress them with `gzip -9n RUN/samples.jsonl`): {plain}"
