"""scripts/mutations.py stays runnable as the code moves: every mutation's `before` text is in its
file exactly once (the script refuses to run otherwise), and every test file it runs exists."""

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("mutations", ROOT / "scripts" / "mutations.py")
mutations = importlib.util.module_from_spec(spec)
sys.modules["mutations"] = mutations  # its dataclasses look their module up there
spec.loader.exec_module(mutations)


@pytest.mark.parametrize("mutation", mutations.MUTATIONS, ids=lambda m: m.name)
def test_each_mutation_applies_to_the_current_tree(mutation):
    for rel, before, after in mutation.edits:
        path = ROOT / rel
        assert path.exists(), f"{mutation.name}: {rel} does not exist"
        assert path.read_text().count(before) == 1, f"{mutation.name}: {rel} does not hold {before!r} once"
        assert before != after
    for arg in mutation.tests:
        if arg.startswith("tests/"):
            assert (ROOT / arg).exists(), f"{mutation.name}: {arg} does not exist"
