"""The one error the ops core raises: a machine code, a readable message and the exit code a face maps it to.

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


class OpsError(Exception):
    def __init__(self, code: str, message: str, exit_code: int = REFUSED):
        super().__init__(message)
        self.code, self.message, self.exit_code = code, message, exit_code

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "exit_code": self.exit_code}
