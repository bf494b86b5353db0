"""One exception type for mistakes the user can fix; the CLI prints it as one line."""


class UserError(Exception):
    """Bad input: the message says what is wrong and what to do. CLI exit code 2."""


def did_you_mean(name: str, choices: list[str]) -> str:
    """'Did you mean 'paper'? ' suffix for registry misses (empty when nothing is close)."""
    import difflib

    close = difflib.get_close_matches(name, choices, n=1)
    return f"Did you mean '{close[0]}'? " if close else ""


def check_choice(flag: str, value: str, choices: list[str] | tuple[str, ...]) -> None:
    """The one wording of a registry miss: "--criterion 'papr' is unknown. Did you mean ...? Available: ..."."""
    if value not in choices:
        raise UserError(f"{flag} {value!r} is unknown. {did_you_mean(value, list(choices))}Available: {', '.join(choices)}.")


def check_at_least(flag: str, value: int | None, low: int) -> None:
    """The one wording of every lower-bound check on a count argument (None = not given)."""
    if value is not None and value < low:
        raise UserError(f"{flag} must be >= {low}, got {value}.")


def library_failure(error: BaseException) -> str | None:
    """Where `error` was raised when that is inside transformers' own code (e.g. Llama4's vision-language
    forward fails on every call in transformers 5.24): "file.py:line: Type: first line", else None (a
    failure of ours keeps its traceback: a bug to report here)."""
    import os
    from pathlib import Path

    tb = error.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    where = tb.tb_frame.f_code.co_filename if tb is not None else ""
    if f"{os.sep}transformers{os.sep}" not in where:
        return None
    reason = (str(error).splitlines() or [""])[0]
    return f"{Path(where).name}:{tb.tb_lineno}: {type(error).__name__}: {reason}"


class SuperExpertsWarning(UserWarning):
    """Something worth knowing about a result that is still produced; the CLI prints it as one line."""


def warn(message: str) -> None:
    """Warn the user (a `SuperExpertsWarning`, shown by the CLI as `superexperts CMD: warning: ...`)."""
    import warnings

    warnings.warn(message, SuperExpertsWarning, stacklevel=3)
