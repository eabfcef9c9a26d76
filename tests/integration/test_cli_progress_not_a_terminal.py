"""``radtrace audit verify`` run where stderr is no terminal (cron, a systemd timer, a script) writes no spinner line.

Found checking the audit log after a first draft: with stderr captured, the command ended with
"⠙ verifying audit chain 0 rows" on stderr though it had checked 7 events (rich prints a live progress line once,
at its end, where it cannot redraw it, with the count of its last refresh): a junk line, with a wrong count, in every
scheduled check's mail or journal. The progress line is now shown on a terminal only.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests_support import radtrace

pytestmark = pytest.mark.integration


def test_audit_verify_writes_no_progress_line_where_stderr_is_no_terminal(tmp_path: Path) -> None:
    env = {"RADTRACE_DATA_DIR": str(tmp_path / "var")}
    upgraded = radtrace("db", "upgrade", env=env, cwd=tmp_path)
    assert upgraded.returncode == 0, upgraded.stderr
    verified = radtrace("audit", "verify", env=env, cwd=tmp_path)
    assert verified.returncode == 0, verified.stderr
    assert "audit chain valid" in verified.stdout
    assert "verifying audit chain" not in verified.stderr
    assert "rows" not in verified.stderr
