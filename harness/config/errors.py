"""A config that cannot run, and the small helpers every error message of a config file uses."""

from __future__ import annotations

import difflib

EXIT_BAD_INPUT = 2  # the exit status of every command given bad input: a config, a flag, a run folder


class ConfigError(Exception):
    """A config that cannot run; the message names the key path (and line) and what was expected.
    `key`: the key path of an error found after loading (expanding the sweep), so that the command
    that read the file can put its line in front (loading.locate)."""

    def __init__(self, message: str, key: tuple = ()):
        super().__init__(message)
        self.key = key


def first_line(e: BaseException) -> str:
    """An exception as one line of a message: its type and the first line of its text."""
    try:
        text = str(e).strip().splitlines()
    except Exception:  # an exception whose text cannot be made (a plugin's, say)
        text = ["(its message could not be read)"]
    return f"{type(e).__name__}: {text[0] if text else ''}"


def did_you_mean(word: str, choices: tuple[str, ...] | list[str]) -> str:
    close = difflib.get_close_matches(str(word), list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
