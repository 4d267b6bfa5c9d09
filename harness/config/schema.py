"""The YAML run config's schema (pydantic): the keys, their types and their checks."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, ValidationInfo,
                      field_validator, model_validator)

from .errors import did_you_mean


DType = Literal["float32", "float16", "bfloat16"]
Bits = Literal[8, 4, 2]
Scheme = Literal["asymmetric", "symmetric", "nf4", "nf4_dq", "fp8"]
Granularity = Literal["tensor", "channel", "group"]
GroupSize = Literal[32, 64, 128, 256]
PosInt = Annotated[int, Field(gt=0)]
# a config's name, which names its runs' folders (and a run id, the name and a time): never a path
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
DEVICE_PATTERN = r"^(auto|cpu|cuda|cuda:\d+)$"  # a config's device, and run's --device
# a matrix dimension: at most 2^24 (16.7M; a model's largest is ~256K), so that every byte and FLOP
# count of a case fits the table's 64-bit integers
MAX_DIM = 1 << 24
Dim = Annotated[int, Field(gt=0, le=MAX_DIM)]
# The ops (their contracts are harness/ops's OPS, which tests/test_registry.py holds to this list).
OP_NAMES = ("quantize", "dequantize", "matmul", "stack", "matmul_w8a8")
OpName = Literal[OP_NAMES]
# An implementation's name; which exist for which op is the registry's (built-ins and plugins),
# checked when the sweep is expanded (execution/cases.py).
ImplName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$")]
ModuleName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")]

# The axes of a sweep, in the order a case's identity lists them.
AXES = ("op", "impl", "bits", "scheme", "granularity", "group_size", "dtype", "M", "N", "K", "layers")
# what one value of each axis is (None: a case where the axis does not apply), for exclude entries
_AXIS_VALUE = {axis: TypeAdapter(kind | None) for axis, kind in zip(AXES, (
    OpName, ImplName, Bits, Scheme, Granularity, GroupSize, DType, Dim, Dim, Dim, PosInt))}


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
    # a case running longer is recorded as timeout; at most ~31 years: setitimer takes no more (1e12 s overflows
    # the platform's time_t and every case would fail with OverflowError)
    case_timeout_s: Annotated[float, Field(ge=0.001, le=1e9, allow_inf_nan=False)] = 600.0

    @field_validator("case_timeout_s", "target_rse", mode="before")
    @classmethod
    def _int_is_float(cls, v: Any) -> Any:
        return float(v) if isinstance(v, int) and not isinstance(v, bool) else v

    @model_validator(mode="after")
    def _time_bounds_in_order(self) -> "Timing":
        if self.min_time_ms > self.max_time_ms:
            raise ValueError(f"min_time_ms ({self.min_time_ms}) is above max_time_ms ({self.max_time_ms}): "
                             f"the adaptive engine could never sample long enough; lower min_time_ms or "
                             f"raise max_time_ms")
        return self


class Shape(Strict):
    """A named weight shape [N, K], e.g. one projection of an LLM layer."""

    name: Annotated[str, Field(min_length=1)] | None = None
    N: Dim
    K: Dim


def _listify(v: Any) -> Any:
    return [v] if v is not None and not isinstance(v, list) else v


def _entry_values(v: Any) -> list:
    """The values an exclude entry names for an axis: a list, or one value, None among them (the
    cases the axis does not apply to, where _listify would give None)."""
    return v if isinstance(v, list) else [v]


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


def _swept(config: dict[str, Any]) -> dict[str, list]:
    """The values a config's sweep gives each axis, as written (N and K of a checkpoint are known
    only once it is read: not here)."""
    sw: Sweep = config["sweep"]
    values = {"op": sw.op, "impl": sw.impl, "bits": sw.bits, "scheme": sw.scheme, "granularity": sw.granularity,
              "group_size": sw.group_size or [], "dtype": sw.dtype or [config.get("dtype")], "M": sw.M or [],
              "layers": sw.layers or []}
    if sw.shapes is not None:
        values.update(N=[s.N for s in sw.shapes], K=[s.K for s in sw.shapes])
    elif sw.N is not None and sw.K is not None:
        values.update(N=sw.N, K=sw.K)
    return values


def _exclude_entry(entry: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
    """An exclude entry: axes of the sweep, each with a value (or list of values) of that axis, one of
    which the sweep has. An entry that cannot match is almost always a typo; it is checked against
    the config as written (over its whole sweep), so that code narrowing a loaded config's sweep
    (model_copy) keeps its exclude list."""
    if not entry:
        raise ValueError("an empty entry would drop every grid point")
    for key, value in entry.items():
        if key not in AXES:
            raise ValueError(f"unknown axis {key!r}{did_you_mean(key, AXES)}; axes are {', '.join(AXES)}")
        for v in _entry_values(value):
            try:
                _AXIS_VALUE[key].validate_python(v, strict=True)
            except ValidationError as e:
                # the string "4" never equals the bit width 4: such an entry would silently drop nothing
                raise ValueError(f"{key}: {v!r} is not a value of the axis {key} "
                                 f"({e.errors()[0]['msg'].lower()})") from None
    swept = _swept(info.data) if "sweep" in info.data else {}
    for key, value in entry.items():
        # None: the cases of an op the axis does not apply to (group_size of a per-channel case)
        if key in swept and not any(v is None or v in swept[key] for v in _entry_values(value)):
            raise ValueError(f"matches no case: {key} {value!r} is not swept (the sweep's {key}: "
                             f"{', '.join(map(repr, swept[key])) or 'none'}); fix the entry or remove it")
    return entry


class RunConfig(Strict):
    name: Annotated[str, Field(pattern=NAME_PATTERN, max_length=80)]
    device: Annotated[str, Field(pattern=DEVICE_PATTERN)] = "auto"
    seed: Annotated[int, Field(ge=0)] = 0
    dtype: DType = "float16"
    weights: Weights = NormalWeights()
    timing: Timing = Timing()
    # modules that define quantbench_impls() (harness/registry): their implementations join the sweep
    plugins: list[ModuleName] = []
    sweep: Sweep
    exclude: list[Annotated[dict[str, Any], AfterValidator(_exclude_entry)]] = []

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
