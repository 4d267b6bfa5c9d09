"""timing.case_timeout_s: a case over its limit is a `timeout` row, and the sweep goes on unharmed."""

import sys
import time

import pytest

from quantbench.harness.execution.case import CaseTimeout, case_time_limit, failed_row


def test_a_timeout_that_fires_inside_an_import_waits_for_the_import(tmp_path, monkeypatch):
    """Raised inside an import, the timeout would leave a module half made (Triton's, imported on a
    first case's first call) and every later case would fail with an AttributeError."""
    (tmp_path / "slow_to_import.py").write_text("import time\ntime.sleep(0.3)\nDONE = True\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "slow_to_import", raising=False)
    with pytest.raises(CaseTimeout):
        with case_time_limit(0.05):
            import slow_to_import  # noqa: F401
            assert sys.modules["slow_to_import"].DONE
            time.sleep(5)  # the limit, deferred while importing, still ends the case
    assert sys.modules["slow_to_import"].DONE


def test_a_timeout_wrapped_by_the_interpreter_is_a_timeout_row():
    """Triton's interpreter re-raises what a kernel raised as InterpreterError(repr(e)) from e."""
    try:
        try:
            raise CaseTimeout("over the per-case limit of 0.5 s")
        except CaseTimeout as e:
            raise RuntimeError(repr(e)) from e
    except RuntimeError as wrapped:
        row = failed_row(wrapped)
    assert row == {"status": "timeout", "message": "over the per-case limit of 0.5 s"}
    assert failed_row(ValueError("x"))["status"] == "error"
