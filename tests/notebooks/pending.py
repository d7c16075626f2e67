"""Issue 24's course-wide checks that other owners' notebooks do not pass yet: one list, for the lead to empty.

Each entry names a notebook (or the course) and what its owner still has to change. The checks run on every
notebook; for a listed one they are expected to fail (``xfail(strict=True)``), so the list cannot go stale: once
the owner's change is merged, the check passes, the strict xfail reports XPASS as a failure, and the entry must
be deleted here. Notebooks 00, 02 and 03 are never listed.
"""
import pytest

PENDING = {
    "main line": {},
    "structure": {},
    "prompts": {},
    "slide text": {},
    "slide metadata": {},
}


def params(check: str, paths):
    """``paths`` as pytest params, those pending for ``check`` marked as expected failures (strict)."""
    pending = PENDING[check]
    return [pytest.param(p, marks=pytest.mark.xfail(strict=True, reason=pending[p.name])) if p.name in pending else p
            for p in paths]
