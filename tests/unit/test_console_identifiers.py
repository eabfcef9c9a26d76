"""How the console writes a patient ID or accession (radtrace.console.identifiers): every invisible character as a
visible escape, the rest HTML-escaped, laid out left to right in stored order. The browser's drawing of it is
checked in tests/e2e/test_console_identifiers_browser.py."""

from __future__ import annotations

from radtrace.console.identifiers import shown_id, shown_id_text, shown_lines


def test_bidi_controls_and_invisible_characters_become_visible_escapes() -> None:
    assert shown_id_text("RT42\u202e0019\u202c7") == "RT42⟨U+202E⟩0019⟨U+202C⟩7"
    assert (
        shown_id_text("A\u2066B\u2069\u200b\u00adC\u061c\x07") == "A⟨U+2066⟩B⟨U+2069⟩⟨U+200B⟩⟨U+00AD⟩C⟨U+061C⟩⟨U+0007⟩"
    )
    assert shown_id_text("RT0000001 \u05d0\u05d1") == "RT0000001 \u05d0\u05d1"  # letters of any script stay
    assert shown_id_text(None) == ""


def test_the_html_is_escaped_and_isolated_left_to_right() -> None:
    assert str(shown_id("RT<b>1\u202e")) == (
        '<bdo dir="ltr" class="id">RT&lt;b&gt;1<span class="control" '
        'title="invisible character: right-to-left override">⟨U+202E⟩</span></bdo>'
    )
    assert str(shown_id(None, "?")) == "?"
    assert str(shown_id("", "<none>")) == "&lt;none&gt;"


def test_long_free_text_keeps_its_line_breaks_and_escapes_everything_else_invisible() -> None:
    shown = str(shown_lines("one\r\ntwo\rthree\nfour \u202eLIAF\u202c zw\u200dj <b>"))
    assert shown.startswith('<bdi class="free-text">one<br>two<br>three<br>four ')  # CR LF, CR, LF: one break each
    assert shown.endswith("&lt;b&gt;</bdi>")
    for code in ("202E", "202C", "200D"):
        assert f">⟨U+{code}⟩</span>" in shown, code
    for raw in ("\r", "\n", "\u202e", "\u200d", "<b>"):
        assert raw not in shown, raw
    assert str(shown_lines(None)) == '<bdi class="free-text"></bdi>'
