"""Review findings on nas/sync.py and nas/retention.py: real tools and folders, no mocks."""

from __future__ import annotations

from nas import sync


def test_redact_hides_a_password_that_contains_an_at_sign() -> None:
    """git takes the last "@" before the host (https://user:p@ss@host/...): no part of the password may remain."""
    out = sync.redact("fatal: unable to access 'https://bob:p@ss@github.com/me/r.git/': 403")
    assert out == "fatal: unable to access 'https://***@github.com/me/r.git/': 403"
    assert sync.redact("https://host/a@b and https://x:y@h") == "https://host/a@b and https://***@h"
