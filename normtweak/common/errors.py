"""The errors a user can act on: the CLI prints their message in one line (no traceback)."""

from __future__ import annotations

USER_ERRORS = (ValueError, FileNotFoundError, OSError)
