"""The review console: web pages where radiologists accept, modify or reject each finding of a draft.

:mod:`.accounts` (users, argon2, lockout, sessions), :mod:`.worklist` (the worklist and its projection table),
:mod:`.review` (a study's reading and the append-only decisions), :mod:`.web` (the FastAPI routes, mounted on the QA
API by :func:`radtrace.console.web.mount_console`), :mod:`.pages` (what every page shares: session, rendering,
forms, CSRF), :mod:`.commands` (``radtrace user …``). See docs/ui.md.
"""
