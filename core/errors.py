"""Two kinds of failure, one meaning each for the exit code (STYLE: 0 ok, 2 a problem the user fixes, 1 a run
that failed). Everything that is neither is a bug and keeps its traceback."""

from __future__ import annotations


class UserError(Exception):
    """A problem the user can fix: one line that names the file, the place and the fix; exit code 2."""

    exit_code = 2
    local = False
    """True when the problem can be one rank's alone (its node's disk): every rank that meets it says so, not
    only rank 0."""


class RunFailed(Exception):
    """A run that went wrong in a way more steps will not fix (a collapsed loss scale, a failed job); exit 1."""

    exit_code = 1
