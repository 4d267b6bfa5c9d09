"""The YAML run config's schema (pydantic): the keys, their types and their checks."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .errors import did_you_mean


DType = Literal["float32", "float16", "bfloat16"]
Bits = Literal[8, 4, 2]
Scheme = Literal["asymmetric", "symmetric", "nf4", "nf4_dq", "fp8"]
Granularity = Literal["tensor", "channel", "group"]
GroupSize = Literal[32, 64, 128, 256]
PosInt = Annotated[int, Field(gt=0)]
# a matrix dimension: at most 2^24 (16.7M; a model's largest is ~256K), so that every byte and FLOP
# count of a case fits the table's 64-bit integers
Dim = Annotated[int, Field(gt=0, le=1 << 24)]
# The ops (their contracts are harness/ops's OPS, which tests/test_registry.py holds to this list).
OP_NAMES = ("quantize", "dequantize", "matmul", "stack", "matmul_w8a8")
OpName = Literal[OP_NAMES]
# An implementation's name; which exist for which op is the registry's (built-ins and plugins),
# checked when the sweep is expanded (execution/cases.py).
ImplName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$")]
ModuleName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")]

# The axes of a sweep, in the order a case's identity lists them.
AXES = ("op", "impl", "bits", "scheme", "granularity", "group_size", "dtype", "M", "N", "K", "layers")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class NormalWeights(Strict):
    """Weight matrices drawn as float32 normal(mean, std) from the run's seed, then cast."""

    source: Literal["normal"] = "normal"
    mean: Annotated[float, Field(allow_inf_nan=False)] = 0.0
    std: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 1.0

    @field_validator("mean", "std", mode="before")
    @classmethod
    def _int_is_float(cls, v: Any) -> Any:
        return float(v) if isinstance(v, int) and not isinstance(v, bool) else v


class SafetensorsWeights(Strict):
    """Weight matrices from a real checkpoint: every 2-D tensor whose name matches the glob
    `tensors` becomes one shape of the sweep (named after the tensor), loaded and cast."""

    source: Literal["safetensors"]
    path: Annotated[str, Field(min_length=1)]
    tensors: Annotated[str, Field(min_length=1)] = "*"

    @field_validator("path")
    @classmethod
    def _exists(cls, v: str) -> str:
        if not Path(v).expanduser().is_file():
            raise ValueError(f"no such safetensors file: {v}")
        return v


Weights = Annotated[NormalWeights | SafetensorsWeights, Field(discriminator="source")]


class Timing(Strict):
    """How GPU samples are taken.

    engine do_bench: triton.testing.do_bench's method, warmup_ms then rep_ms of samples, with a GPU spin
    before each sample so that launch latency is not timed (see harness/execution/timing.py).
    engine adaptive: samples until the median's relative standard error is at most target_rse,
    with at least min_samples samples and min_time_ms of sampling, and at most max_time_ms
    (nvbench's defaults: 0.5%, 10 samples, 0.5 s, 15 s). Not yet validated on a GPU.
    engine cuda_graph: for launch-bound kernels. One CUDA graph holds graph_reps repetitions of
    (L2 flush, kernel), another graph_reps flushes alone; each sample is one replay of the first
    less the median replay of the second, over graph_reps. warmup_ms of replays, then rep_ms of
    samples (at least min_samples).
    On the CPU every engine falls back to cpu_reps wall-clock samples (timing_valid False).
    """

    engine: Literal["do_bench", "adaptive", "cuda_graph"] = "do_bench"
    warmup_ms: Annotated[int, Field(ge=0)] = 25
    rep_ms: Annotated[int, Field(gt=0)] = 100
    flush_l2: bool = True
    min_samples: Annotated[int, Field(ge=2)] = 10
    min_time_ms: Annotated[int, Field(ge=0)] = 500
    max_time_ms: Annotated[int, Field(gt=0)] = 15000
    target_rse: Annotated[float, Field(gt=0, lt=1)] = 0.005
    graph_reps: Annotated[int, Field(ge=1, le=1000)] = 20  # kernels per CUDA graph (engine cuda_graph)
    cpu_reps: Annotated[int, Field(gt=0, le=100)] = 3  # repetitions on the interpreter (not valid timings)
    case_timeout_s: Annotated[float, Field(gt=0)] = 600.0  # a case running longer is recorded as timeout

    @field_validator("case_timeout_s", "target_rse", mode="before")
    @classmethod
    def _int_is_float(cls, v: Any) -> Any:
        return float(v) if isinstance(v, int) and not isinstance(v, bool) else v


class Shape(Strict):
    """A named weight shape [N, K], e.g. one projection of an LLM layer."""

    name: Annotated[str, Field(min_length=1)] | None = None
    N: Dim
    K: Dim


def _listify(v: Any) -> Any:
    return [v] if v is not None and not isinstance(v, list) else v


class Sweep(Strict):
    """The axes whose Cartesian product is the run. A scalar counts as a one-element list."""

    op: Annotated[list[OpName], Field(min_length=1)]
    impl: Annotated[list[ImplName], Field(min_length=1)] = ["triton", "torch"]
    bits: Annotated[list[Bits], Field(min_length=1)] = [8, 4]
    scheme: Annotated[list[Scheme], Field(min_length=1)] = ["asymmetric"]
    granularity: Annotated[list[Granularity], Field(min_length=1)] = ["channel"]
    group_size: Annotated[list[GroupSize], Field(min_length=1)] | None = None
    dtype: Annotated[list[DType], Field(min_length=1)] | None = None
    M: Annotated[list[Dim], Field(min_length=1)] | None = None
    N: Annotated[list[Dim], Field(min_length=1)] | None = None
    K: Annotated[list[Dim], Field(min_length=1)] | None = None
    shapes: Annotated[list[Shape], Field(min_length=1)] | None = None
    layers: Annotated[list[PosInt], Field(min_length=1)] | None = None

    @field_validator("op", "impl", "bits", "scheme", "granularity", "group_size", "dtype", "M", "N", "K",
                     "layers", mode="before")
    @classmethod
    def _scalar_to_list(cls, v: Any) -> Any:
        return _listify(v)

    @model_validator(mode="after")
    def _consistent(self) -> "Sweep":
        if self.shapes is not None and (self.N is not None or self.K is not None):
            raise ValueError("give either 'shapes' or the axes 'N' and 'K', not both")
        if self.group_size is not None and "group" not in self.granularity:
            raise ValueError("'group_size' is set but 'granularity' has no 'group': add granularity "
                             "'group' or remove group_size")
        if "group" in self.granularity and self.group_size is None:
            raise ValueError("granularity 'group' needs 'group_size' (one or more of 32, 64, 128, 256)")
        return self


class RunConfig(Strict):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=80)]
    device: Annotated[str, Field(pattern=r"^(auto|cpu|cuda|cuda:\d+)$")] = "auto"
    seed: Annotated[int, Field(ge=0)] = 0
    dtype: DType = "float16"
    weights: Weights = NormalWeights()
    timing: Timing = Timing()
    # modules that define quantbench_impls() (harness/registry): their implementations join the sweep
    plugins: list[ModuleName] = []
    sweep: Sweep
    exclude: list[dict[str, Any]] = []

    @model_validator(mode="after")
    def _shapes_from_one_place(self) -> "RunConfig":
        given = self.sweep.shapes is not None or self.sweep.N is not None
        if self.weights.source == "safetensors":
            if given:
                raise ValueError("sweep: with weights from safetensors the shapes are the tensors' own; "
                                 "remove 'shapes', 'N' and 'K'")
            if "stack" in self.sweep.op:
                raise ValueError("sweep.op: 'stack' chains random square layers; it does not take "
                                 "weights from safetensors")
        elif self.sweep.shapes is None and (self.sweep.N is None or self.sweep.K is None):
            raise ValueError("sweep: the weight shape is missing: give 'N' and 'K', or a list of 'shapes'")
        return self

    @field_validator("exclude")
    @classmethod
    def _exclude_keys(cls, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for i, entry in enumerate(entries):
            if not entry:
                raise ValueError(f"exclude[{i}] is empty: it would drop every grid point")
            for key in entry:
                if key not in AXES:
                    raise ValueError(f"exclude[{i}] has unknown axis {key!r}{did_you_mean(key, AXES)}; "
                                     f"axes are {', '.join(AXES)}")
        return entries
