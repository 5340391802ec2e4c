"""Why a report could not be made: one line for the reviewer, and the exit code."""

from __future__ import annotations

from lookup_proxy.errors import LookupProxyError

EXIT_BAD_INPUT = 2
EXIT_NOTHING_TO_REVIEW = 3


class ReportError(LookupProxyError):
    """A report that cannot be made (bad month, no archive, nothing in the month)."""

    def __init__(self, message: str, exit_code: int = EXIT_BAD_INPUT) -> None:
        super().__init__(message)
        self.exit_code = exit_code
