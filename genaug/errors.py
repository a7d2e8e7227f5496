"""User-facing errors.

Anything the user can fix (a wrong path, an unknown class, a corrupt image) is raised as
`GenaugError`; the CLI turns it into a one-line message and a non-zero exit, no traceback.
"""


class GenaugError(Exception):
    """An error caused by the user's input, reported as one line."""
