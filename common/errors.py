"""The project's errors and exit codes: one base, `AlertorError`, whose exit code a face maps once.

Exit 2 (REFUSED) is a safety rule saying no (an unknown operator, a window that is not ACTIVE, an expired approval),
exit 3 (FAILED) is something broken. The CLI prints `code: message` and exits with `exit_code`; an HTTP face maps
the same error to a status. Messages never carry a token.
"""

from __future__ import annotations

from typing import Any

# The exit codes of every command: done (or done with warnings), blocked by a safety check (a normal outcome),
# failed (a person must look).
EXIT_OK, EXIT_BLOCKED, EXIT_FAILED = 0, 2, 3
REFUSED, FAILED = EXIT_BLOCKED, EXIT_FAILED  # an OpsError's exit codes


class AlertorError(Exception):
    """The one base of the project's errors: a readable message (naming the file, the field and what was expected
    where there is one), a machine `code`, and the `exit_code` the CLI exits with; the HTTP faces map the same two
    to a status. Subclasses set their own defaults."""

    code = "FAILED"
    exit_code = EXIT_FAILED

    def __init__(self, message: str = "", *, code: str | None = None, exit_code: int | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if exit_code is not None:
            self.exit_code = exit_code

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "exit_code": self.exit_code}


class OpsError(AlertorError):
    """A refusal or failure of the ops core with its machine code first: `code: message`."""

    def __init__(self, code: str, message: str, exit_code: int = REFUSED):
        super().__init__(message, code=code, exit_code=exit_code)

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"
