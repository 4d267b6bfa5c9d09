"""Sweeps on a local Dask cluster of CPU workers (`quantbench run --workers N`, harness/execution/
cluster.py), against plain runs of the same config: the same cases with the same errors; a worker
killed mid-sweep costs a retry, one killed twice costs only its workload; a killed driver resumed
equals an uninterrupted run; each worker measures one workload at a time."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("distributed")

from quantbench.harness.cli import main  # noqa: E402
from quantbench.harness.config import ConfigError  # noqa: E402
from quantbench.harness.execution import cluster  # noqa: E402
from quantbench.harness.results import load_run  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ERRORS = ["mse", "mae", "max_abs_err", "snr_db", "rel_err", "method_rel_err", "kernel_rel_err"]
CONFIG = """\
name: small
device: cpu
seed: 0
timing: {cpu_reps: 1}
plugins: PLUGINS
sweep:
  op: [quantize, matmul]
  impl: IMPLS
  bits: [8, 4]
  granularity: [channel]
  scheme: [symmetric]
  M: [2]
  N: [16]
  K: [64]
"""
# a matmul implementation that kills its worker process when it is first called: once per
# marker file, or every time
KILLER = '''
import os
from pathlib import Path
from quantbench import Impl, Role, kernels

def killing_mm(inp):
    marker = Path(os.environ["QB_KILL_MARKER"])
    if os.environ.get("QB_KILL_ALWAYS") or not marker.exists():
        marker.touch()
        os._exit(17)
    x, q = inp.x, inp.q
    return lambda: x @ kernels.dequantize_ref(q, x.dtype).t()

def quantbench_impls():
    return [Impl(op="matmul", name="killer", role=Role.CANDIDATE, factory=killing_mm,
                 description="kills its worker on its first call")]
'''


def write_config(tmp_path: Path, impls: str = "[triton, torch]", plugins: str = "[]") -> Path:
    path = tmp_path / "small.yaml"
    path.write_text(CONFIG.replace("IMPLS", impls).replace("PLUGINS", plugins))
    return path


def run(config: Path, out: Path, *extra: str) -> Path:
    assert main(["run", str(config), "--out", str(out), "--no-progress", *extra]) == 0
    (folder,) = [p for p in out.iterdir() if p.is_dir()]
    return folder


def by_case(df: pd.DataFrame) -> pd.DataFrame:
    key = ["op", "impl", "bits", "granularity", "scheme", "M", "N", "K"]
    return df.assign(M=df["M"].fillna(0)).set_index(key).sort_index()


def test_two_workers_give_the_plain_runs_cases_and_errors(tmp_path):
    config = write_config(tmp_path)
    plain_folder = run(config, tmp_path / "plain")
    plain = by_case(load_run(plain_folder)[0])
    spread_folder = run(config, tmp_path / "cluster", "--workers", "2")
    spread = by_case(load_run(spread_folder)[0])
    assert list(spread.index) == list(plain.index)
    in_order = [pd.read_csv(f / "results.csv")[["op", "impl", "bits"]].values.tolist() for f in (plain_folder, spread_folder)]
    assert in_order[0] == in_order[1]  # results.csv in the sweep's order, whatever order the workloads finished in
    assert (spread["status"] == plain["status"]).all() and set(plain["status"]) == {"ok"}
    pd.testing.assert_frame_equal(spread[ERRORS], plain[ERRORS])
    meta = json.loads((spread_folder / "meta.json").read_text())
    assert len(meta["workers"]) == 2 and {w["gpu"] for w in meta["workers"]} == {plain["gpu"].iloc[0]}
    assert spread["host"].notna().all()


@pytest.fixture
def killer_plugin(tmp_path, monkeypatch):
    """The KILLER plugin importable in this process and in the workers (through PYTHONPATH, which
    the local cluster's processes inherit)."""
    (tmp_path / "killer_plugin.py").write_text(KILLER)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("QB_KILL_MARKER", str(tmp_path / "killed-once"))
    return tmp_path


def test_a_worker_killed_mid_sweep_costs_only_a_retry(tmp_path, killer_plugin):
    config = write_config(tmp_path, "[killer, torch]", "[killer_plugin]")
    df, meta = load_run(run(config, tmp_path / "out", "--workers", "2"))
    assert (killer_plugin / "killed-once").exists()  # a worker did die
    assert set(df["status"]) == {"ok"} and len(df) == meta["cases"] == 6  # quantize: torch; matmul: both


def test_a_worker_killed_twice_costs_its_workload_and_the_sweep_goes_on(tmp_path, killer_plugin, monkeypatch):
    monkeypatch.setenv("QB_KILL_ALWAYS", "1")
    config = write_config(tmp_path, "[killer, torch]", "[killer_plugin]")
    df = load_run(run(config, tmp_path / "out", "--workers", "2"))[0]
    lost = df[df["op"] == "matmul"]
    assert set(lost["status"]) == {"error"} and lost["message"].str.contains("worker died").all()
    assert set(df[df["op"] == "quantize"]["status"]) == {"ok"}


def test_a_killed_driver_resumed_equals_an_uninterrupted_run(tmp_path):
    config = write_config(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    command = [sys.executable, "-m", "quantbench.harness.cli", "run", str(config), "--out", str(out),
               "--no-progress", "--workers", "2"]
    driver = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:  # killed (with its workers) once the first case is on disk
            rows = list(out.glob("*/rows.jsonl"))
            if rows and rows[0].read_text().count("\n") >= 1:
                break
            time.sleep(0.2)
    finally:
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
    (folder,) = out.iterdir()
    assert not (folder / "results.csv").exists()  # it never finished
    resumed = by_case(load_run(run(config, out, "--workers", "2", "--resume", str(folder)))[0])
    plain = by_case(load_run(run(config, tmp_path / "plain"))[0])
    assert list(resumed.index) == list(plain.index)
    pd.testing.assert_frame_equal(resumed[ERRORS], plain[ERRORS])


def test_each_worker_measures_one_workload_at_a_time():
    import torch
    with cluster.open_cluster(2, None, torch.device("cpu")) as client:
        assert list(client.nthreads().values()) == [1, 1]


def test_workers_of_two_gpu_models_are_refused_unless_allowed():
    identities = {f"tcp://w{i}": {"env": {"hostname": f"h{i}", "gpu": gpu, "gpu_uuid": f"GPU-{i}"}, "calibration": {}}
                  for i, gpu in enumerate(["NVIDIA H200", "NVIDIA H100 80GB HBM3"])}
    with pytest.raises(ConfigError, match="--allow-mixed"):
        cluster._workers_meta(identities, allow_mixed=False)
    assert [w["host"] for w in cluster._workers_meta(identities, allow_mixed=True)] == ["h0", "h1"]


def test_a_run_over_two_gpu_models_is_never_judged_as_one_gpu():
    from quantbench.harness.analysis.loaded_run import gpu_of
    one = {"env": {"gpu": "NVIDIA H200"}, "workers": [{"gpu": "NVIDIA H200"}, {"gpu": "NVIDIA H200"}]}
    mixed = {"env": {"gpu": "NVIDIA H200"}, "workers": [{"gpu": "NVIDIA H200"}, {"gpu": "NVIDIA H100 80GB HBM3"}]}
    assert gpu_of(one) == "NVIDIA H200"
    assert gpu_of(mixed) == "mixed (NVIDIA H100 80GB HBM3, NVIDIA H200)" != gpu_of(one)


def test_without_dask_the_options_name_the_extra(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed -> ImportError
    assert main(["run", str(write_config(tmp_path)), "--out", str(tmp_path), "--workers", "2"]) == 2
    assert "quantbench[cluster]" in capsys.readouterr().err


def test_more_interpreter_workers_than_cores_are_refused(tmp_path, capsys):
    """--workers 99999 on a machine without a GPU would start as many processes: exit 2, before
    any is started, naming the cores there are."""
    import os
    too_many = (os.cpu_count() or 1) + 1
    assert main(["run", str(write_config(tmp_path)), "--out", str(tmp_path / "out"), "--workers", str(too_many)]) == 2
    assert f"--workers {too_many}: this machine has {os.cpu_count()} CPU core(s)" in capsys.readouterr().err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.parametrize("flags, message", [(["--workers", "0"], "--workers: expected a number of workers >= 1"),
                                            (["--allow-mixed"], "--allow-mixed: applies to a run on a cluster")])
def test_flags_that_would_be_ignored_are_refused(tmp_path, capsys, flags, message):
    """--workers 0 read as "every GPU" and --allow-mixed without a cluster did nothing: exit 2."""
    assert main(["run", str(write_config(tmp_path)), "--out", str(tmp_path / "out"), *flags]) == 2
    assert message in capsys.readouterr().err


def test_shard_and_workers_are_refused_together(tmp_path, capsys):
    assert main(["run", str(write_config(tmp_path)), "--out", str(tmp_path), "--workers", "2", "--shard", "1/2"]) == 2
    assert "--shard" in capsys.readouterr().err


def test_an_unreachable_scheduler_is_a_clear_error(tmp_path, capsys):
    code = textwrap.dedent("""
        import sys
        from quantbench.harness.cli import main
        sys.exit(main(["run", sys.argv[1], "--out", sys.argv[2], "--scheduler", "tcp://127.0.0.1:9"]))
    """)
    done = subprocess.run([sys.executable, "-c", code, str(write_config(tmp_path)), str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "--scheduler tcp://127.0.0.1:9" in done.stderr and "Traceback" not in done.stderr


def test_a_worker_that_cannot_prepare_is_a_clear_error(tmp_path):
    """A cluster whose workers lack what the config asks for (here a GPU): exit 2, one line."""
    import torch
    if torch.cuda.is_available():
        pytest.skip("the workers here have the GPU the config asks for")
    config = tmp_path / "on-gpu.yaml"
    config.write_text(CONFIG.replace("device: cpu", "device: cuda").replace("IMPLS", "[torch]").replace("PLUGINS", "[]"))
    code = textwrap.dedent("""
        import subprocess, sys
        from distributed import LocalCluster
        if __name__ == "__main__":
            with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as c:
                done = subprocess.run([sys.executable, "-m", "quantbench.harness.cli", "run", sys.argv[1], "--out",
                                       sys.argv[2], "--no-progress", "--scheduler", c.scheduler_address],
                                      capture_output=True, text=True, timeout=120)
            print(done.returncode)
            print(done.stderr)
    """)
    script = tmp_path / "drive.py"
    script.write_text(code)
    out = subprocess.run([sys.executable, str(script), str(config), str(tmp_path)], capture_output=True, text=True,
                         timeout=180).stdout
    code, _, err = out.partition("\n")
    assert code == "2" and "a Dask worker could not prepare" in err and "Traceback" not in err
