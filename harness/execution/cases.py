"""Expand a config into cases: the Cartesian product of its axes, collapsed and filtered."""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, fields, replace

from quantbench.kernels.spec import CODEBOOK_SCHEMES, spec_exists

from ..config import ConfigError, RunConfig, did_you_mean
from ..config.schema import MAX_DIM
from ..ops import OPS
from ..registry import Registry, load_registry


@dataclass(frozen=True)
class Case:
    """One grid point for one implementation. Axes that do not apply to the op are None."""

    op: str
    impl: str
    bits: int | None
    scheme: str | None
    granularity: str | None
    group_size: int | None
    dtype: str
    M: int | None
    N: int
    K: int
    layers: int | None
    shape_name: str | None = None

    @property
    def workload(self) -> "Case":
        """The case without its implementation: what every implementation of it shares."""
        return replace(self, impl="*")

    def key(self) -> str:
        """A stable text key of the case (every field), for resuming and joining runs."""
        return "|".join(f"{f.name}={getattr(self, f.name)}" for f in fields(self))

    def as_dict(self) -> dict:
        return asdict(self)


def _shape_points(cfg: RunConfig) -> list[tuple[int, int, str | None]]:
    if cfg.weights.source == "safetensors":
        from ..ops.inputs import checkpoint_matrices
        found = checkpoint_matrices(cfg.weights)
        if not found:
            raise ConfigError(f"weights.tensors: no 2-D tensor in {cfg.weights.path} matches "
                              f"{cfg.weights.tensors!r}", key=("weights", "tensors"))
        for name, n, k in found:  # the size rule of sweep.N and sweep.K (config.schema's Dim)
            if not (0 < n <= MAX_DIM and 0 < k <= MAX_DIM):
                raise ConfigError(f"weights.tensors: tensor {name!r} in {cfg.weights.path} is [{n}, {k}]; a weight "
                                  f"matrix needs N and K from 1 to {MAX_DIM}, as sweep.N and sweep.K do: narrow "
                                  f"weights.tensors to leave it out", key=("weights", "tensors"))
        return [(n, k, name) for name, n, k in found]
    if cfg.sweep.shapes is not None:
        return [(s.N, s.K, s.name) for s in cfg.sweep.shapes]
    return [(n, k, None) for n in cfg.sweep.N for k in cfg.sweep.K]


def _excluded(case: Case, exclude: list[dict]) -> bool:
    for entry in exclude:
        if all(getattr(case, key) in (value if isinstance(value, list) else [value])
               for key, value in entry.items()):
            return True
    return False


def _check_impl_names(cfg: RunConfig, registry: Registry) -> None:
    known = list(dict.fromkeys(impl.name for op in cfg.sweep.op for impl in registry.of(op)))
    for name in cfg.sweep.impl:
        if name not in known:
            raise ConfigError(f"sweep.impl: no implementation {name!r} of {', '.join(cfg.sweep.op)}"
                              f"{did_you_mean(name, known)}; "
                              f"known: {', '.join(known)} (`quantbench list`; a plugin's come with `plugins:`)",
                              key=("sweep", "impl"))


def expand(cfg: RunConfig, registry: Registry | None = None) -> list[Case]:
    """All cases of a config, in sweep order, each once. Raises ConfigError for an implementation
    no op of the sweep has, or a grid point that cannot run (a group size that does not divide K).
    `registry`: the implementations (default: the built-ins, installed plugins and the config's)."""
    registry = registry or load_registry(cfg.plugins)
    _check_impl_names(cfg, registry)
    sw = cfg.sweep
    names = {op: set(registry.names(op)) for op in sw.op}
    seen: dict[Case, None] = {}
    product = itertools.product(
        sw.op, _shape_points(cfg), sw.dtype or [cfg.dtype], sw.bits, sw.scheme, sw.granularity,
        sw.group_size or [None], sw.M or [None], sw.layers or [None], sw.impl,
    )
    for op, (n, k, shape_name), dtype, bits, scheme, gran, group, m, layers, impl in product:
        if impl not in names[op]:
            continue
        applies, fixed = OPS[op].axes, OPS[op].fixed
        case = Case(
            op=op, impl=impl,
            bits=bits if "bits" in applies else fixed.get("bits"),
            scheme=scheme if "scheme" in applies else fixed.get("scheme"),
            granularity=gran if "granularity" in applies else fixed.get("granularity"),
            group_size=group if gran == "group" and "group_size" in applies else None,
            dtype=dtype, M=m if "M" in applies else None, N=n, K=k,
            layers=layers if "layers" in applies else None, shape_name=shape_name,
        )
        if case in seen or _excluded(case, cfg.exclude) or not _format_exists(case):
            continue
        if OPS[op].square and n != k:
            raise ConfigError(f"sweep: the {op} op chains layers, so each must be square; got N = {n}, "
                              f"K = {k}{f' (shape {shape_name!r})' if shape_name else ''}", key=("sweep",))
        if case.group_size is not None and k % case.group_size != 0:
            raise ConfigError(f"sweep.group_size: group size {case.group_size} does not divide K = {k}"
                              f"{f' (shape {shape_name!r})' if shape_name else ''}; choose a divisor "
                              f"of K or drop the point with an 'exclude:' entry", key=("sweep", "group_size"))
        seen[case] = None
    _check_codebook_schemes(cfg, seen)
    if not seen:
        raise ConfigError("sweep: every grid point is excluded, nothing would run", key=("exclude",))
    return list(seen)


def _format_exists(case: Case) -> bool:
    """False for a grid point of a codebook scheme (nf4, nf4_dq, fp8) at a bit width or
    granularity it does not have: `scheme: [asymmetric, nf4]` with `bits: [8, 4]` sweeps nf4 at 4
    bits only, as `quantbench validate` shows."""
    return case.scheme is None or spec_exists(case.bits, case.scheme, case.granularity)


def _check_codebook_schemes(cfg: RunConfig, cases: dict[Case, None]) -> None:
    """A codebook scheme the sweep names but none of its bits and granularities can express is a
    config error naming the keys (rather than a scheme that silently never runs)."""
    swept = {case.scheme for case in cases}
    for scheme in cfg.sweep.scheme:
        takes_scheme = any("scheme" in OPS[op].axes for op in cfg.sweep.op)
        if scheme in CODEBOOK_SCHEMES and takes_scheme and scheme not in swept:
            bits, granularities, _ = CODEBOOK_SCHEMES[scheme]
            raise ConfigError(f"sweep.scheme: {scheme!r} has {bits}-bit codes with granularity "
                              f"{' or '.join(granularities)}, and sweep.bits {cfg.sweep.bits} with sweep.granularity "
                              f"{cfg.sweep.granularity} give it no grid point; add bits {bits} and one of those "
                              f"granularities, or drop the scheme", key=("sweep", "scheme"))
