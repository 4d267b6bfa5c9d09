"""Reading a YAML file and validating it, with errors that name the file, the line and the key path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from .errors import ConfigError, did_you_mean
from .schema import NormalWeights, RunConfig, SafetensorsWeights, Shape, Sweep, Timing


def _known_keys(model: type[BaseModel]) -> set[str]:
    keys = set(model.model_fields)
    for sub in (NormalWeights, SafetensorsWeights, Timing, Sweep, Shape):
        keys |= set(sub.model_fields)
    return keys


def _path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif str(part).startswith(("function-", "literal[", "list[", "int", "str", "float", "bool")) \
                or part in ("normal", "safetensors", "[key]"):
            continue  # pydantic's names for the union member it tried, not a key
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def _line_of(root: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """1-based line of the deepest YAML node along `loc`, when the parser knows it."""
    node, line = root, None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            match = next(((k, v) for k, v in node.value if k.value == str(part)), None)
            if match is None:
                break
            line = match[0].start_mark.line + 1
            node = match[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


def _describe(err: dict[str, Any], root: yaml.Node | None, source: str, known_keys: set[str]) -> str:
    loc = tuple(err["loc"])
    where = _path(loc)
    line = _line_of(root, loc)
    at = f"{source}:{line}: " if line else f"{source}: "
    if err["type"] == "extra_forbidden":
        key = loc[-1]
        return f"{at}unknown key '{where}'{did_you_mean(key, sorted(known_keys))}"
    if err["type"] == "missing":
        return f"{at}missing required key '{where}'"
    msg = err["msg"].removeprefix("Value error, ")
    got = err.get("input")
    shown = "" if isinstance(got, (dict, list)) or got is None else f" (got {got!r})"
    return f"{at}{where}: {msg}{shown}"


def validation_message(e: ValidationError, root: yaml.Node | None, source: str, known_keys: set[str]) -> str:
    """One line per error of a YAML file validated by pydantic: file, line, key path, what was expected."""
    return "\n".join(_describe(err, root, source, known_keys) for err in e.errors())


def parse_config(data: Any, source: str = "config", root: yaml.Node | None = None) -> RunConfig:
    if not isinstance(data, dict):
        kind = "an empty file" if data is None else f"a {type(data).__name__}"
        raise ConfigError(f"{source}: expected a mapping of keys (name, sweep, ...), got {kind}")
    try:
        return RunConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(validation_message(e, root, source, _known_keys(RunConfig))) from None


def read_yaml(path: str | Path) -> tuple[Any, yaml.Node | None]:
    """The parsed YAML file and its node tree (for line numbers); ConfigError if unreadable."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte {e.start} is {e.object[e.start:e.start + 1]!r}): "
                          f"a config is a YAML text file") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config: {e.strerror}") from None
    try:
        root = yaml.compose(text)
        loop = recursive_alias(root)
        if loop:
            where, line = loop
            raise ConfigError(f"{path}:{line}: '{where}' is an alias of a value that contains it (a recursive "
                              f"alias): a config holds plain values, not cycles")
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigError(f"{at}: YAML syntax error: {problem}") from None
    except RecursionError:  # the parser is recursive: thousands of nested brackets exhaust Python's stack
        raise ConfigError(f"{path}: nested too deeply to read: a config is a few levels of keys and lists") from None
    twice = duplicate_keys(root)
    if twice:
        raise ConfigError("\n".join(f"{path}:{line}: key '{key}' is given twice (first on line {first}): "
                                     f"YAML keeps only the last, which is rarely what was meant"
                                     for key, line, first in twice))
    return data, root


def locate(path: str | Path, e: ConfigError) -> ConfigError:
    """An error found after loading (its `key` set), with the file and the key's line in front."""
    if not e.key:
        return e
    try:
        _, root = read_yaml(path)
    except ConfigError:
        root = None
    line = _line_of(root, e.key)
    return ConfigError(f"{path}:{line}: {e}" if line else f"{path}: {e}")


def recursive_alias(node: yaml.Node | None) -> tuple[str, int] | None:
    """(key path, line) of the first value that is an alias of a node containing it, as in
    `a: &x {b: *x}`: the composer turns it into a cycle, which every walk of the tree would follow
    forever; None where there is none. The line is the nearest key's: an alias keeps no line."""
    inside: set[int] = set()  # the nodes being walked: meeting one again is a cycle
    done: set[int] = set()  # the nodes walked whole (an alias may reach one many times)

    def walk(node: yaml.Node, where: str, line: int) -> tuple[str, int] | None:
        if not isinstance(node, (yaml.MappingNode, yaml.SequenceNode)) or id(node) in done:
            return None
        if id(node) in inside:
            return where or "(top level)", line
        inside.add(id(node))
        if isinstance(node, yaml.MappingNode):
            children = [(f"{where}.{k.value}" if where else str(k.value), k.start_mark.line + 1, v)
                        for k, v in node.value]
        else:
            children = [(f"{where}[{i}]", line, item) for i, item in enumerate(node.value)]
        for name, at, child in children:
            found = walk(child, name, at)
            if found:
                return found
        inside.discard(id(node))
        done.add(id(node))
        return None

    return walk(node, "", 1) if node is not None else None


def duplicate_keys(node: yaml.Node | None, where: str = "",
                   seen: set[int] | None = None) -> list[tuple[str, int, int]]:
    """(key path, line, line of its first occurrence) of every key given twice in one mapping.
    A node reached again through an alias is looked at once (`seen`)."""
    seen = set() if seen is None else seen
    found: list[tuple[str, int, int]] = []
    if id(node) in seen:
        return found
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        first: dict[str, int] = {}
        for key, value in node.value:
            name = f"{where}.{key.value}" if where else str(key.value)
            line = key.start_mark.line + 1
            if key.value in first:
                found.append((name, line, first[key.value]))
            else:
                first[key.value] = line
            found += duplicate_keys(value, name, seen)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            found += duplicate_keys(item, f"{where}[{i}]", seen)
    return found


def shipped_configs() -> dict[str, Path]:
    """The example configs installed with the package (the repository's configs/), by name."""
    from importlib.resources import files
    folder = Path(str(files("quantbench.configs")))
    return {p.stem: p for p in sorted(folder.glob("*.yaml"))}


def resolve_config(path: str | Path) -> Path:
    """A config file: `path` where it exists, else the shipped config of that name (`quick` or
    `quick.yaml`: what an installed quantbench runs from any folder). A path that is neither is
    returned as given, for read_yaml to report."""
    path = Path(path)
    if path.exists() or len(path.parts) > 1:
        return path
    return shipped_configs().get(path.name.removesuffix(".yaml"), path)


def load_config(path: str | Path) -> RunConfig:
    """Read and validate a YAML config (a file, or a shipped config by name: resolve_config);
    raises ConfigError naming the key path and line."""
    path = resolve_config(path)
    if not path.exists():
        raise ConfigError(f"{path}: cannot read config: no such file, and no shipped config of that name "
                          f"(those are: {', '.join(shipped_configs())}; `quantbench configs` lists them)")
    data, root = read_yaml(path)
    return parse_config(data, str(path), root)
