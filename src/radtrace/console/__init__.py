"""The review console: web pages where radiologists accept, modify or reject each finding of a draft.

:mod:`.accounts` (users, argon2, lockout, sessions), :mod:`.worklist` (the worklist and its projection table),
:mod:`.review` (a study's reading and the append-only decisions), :mod:`.decisions` (recording them), :mod:`.web`
(login and worklist routes, and :func:`radtrace.console.web.mount_console`, which mounts every console route on
the QA API), :mod:`.study_page` (the study page, its images and assessment SRs), :mod:`.study_decisions` (the
decisions posted from it), :mod:`.pages` (what every page shares: session, rendering, forms, CSRF),
:mod:`.commands` (``radtrace user …``).
See docs/ui.md.
"""
