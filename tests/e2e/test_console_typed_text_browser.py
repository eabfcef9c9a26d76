"""Text a radiologist typed into a decision's form survives a session that ended before it was sent (Debian's Chromium
under Playwright, uvicorn on a local port): typed, the session expired, the tab closed without sending; signed in
again, the study page offers the text back, encrypted in the browser's storage meanwhile, under keys that name no
patient; recorded, it is gone; another account is not offered it; an entry of an older revision or older than a shift
is dropped.

Before: nothing was kept in the browser; the text was gone with the tab (the signed-out page shows typed text back
only when the form was sent).
"""

from __future__ import annotations

import base64
import json
import random
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from browser_support import Page, expect, needs_chromium, sign_in, tab, wait_until
from console_support import (
    PASSWORD,
    add_user,
    console_settings,
    finding_decisions,
    reported_study,
    serving,
    study_path,
)
from radtrace.model.reader import StudyReader
from radtrace.store.engine import Store
from radtrace.store.migrate import upgrade

pytestmark = [pytest.mark.e2e, needs_chromium]

IMPRESSION = "Small left pleural effusion, new since the prior film.\nNo pneumothorax."
COMMENT = "skin fold over the left apex"
PATIENT = ("TYPED^TINA", "RT0000095", "ACC000095")
HOST = "radtrace.test"  # not localhost: plain HTTP to it is not a secure context


@dataclass
class Site:
    url: str
    store: Store
    studies: dict[str, str]

    def decisions(self, study_uid: str) -> list[dict[str, Any]]:
        return finding_decisions(self.store, study_uid)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("console-typed")
    store = Store.from_url(f"sqlite:///{root / 'radtrace.db'}")
    upgrade(store)
    settings = console_settings(root, store)
    reader = StudyReader(settings.model, data_dir=settings.data_dir)
    studies = {"kept": reported_study(settings, store, reader, seed=95, name=PATIENT[0]),
               "rules": reported_study(settings, store, reader, seed=96, name="RULES^RITA")}  # fmt: skip
    for name in ("dr.typist", "dr.other"):
        add_user(store, name, "radiologist")
    with serving(store, settings) as url:
        yield Site(url, store, studies)
    store.dispose()


def _stored(page: Page) -> dict[str, str]:
    return dict(page.evaluate("Object.entries(Object.assign({}, localStorage, sessionStorage))"))


def _sign_in_here(page: Page, name: str) -> None:
    """The sign-in form the console answered a signed-out request with."""
    page.get_by_label("User name").fill(name)
    page.get_by_label("Password").fill(PASSWORD)
    page.keyboard.press("Enter")


def test_text_typed_when_the_session_ended_and_the_tab_closed_is_offered_back(browser: Any, site: Site) -> None:
    study_uid = site.studies["kept"]
    url = f"{site.url}{study_path(site.store, study_uid)}"
    with tab(browser, allowed=("status of 401",)) as page:
        sign_in(page, site.url, "dr.typist")
        page.goto(url)
        label = str(page.locator("#finding-1").get_attribute("data-label"))
        page.locator("#impression-text").fill(IMPRESSION)
        page.locator("#finding-1 input.comment").fill(COMMENT)
        page.locator("#finding-1 select.status").select_option("uncertain")
        page.context.clear_cookies()  # the session expired while they typed
        stored = _stored(page)
        assert len(stored) == 2, stored  # the impression and finding 1
        for key, value in stored.items():  # no patient identifier in a key; the text itself encrypted
            assert key.startswith("radtrace.typed.")
            assert not any(part in key for part in (*PATIENT, study_uid))
            assert not any(typed in value for typed in ("skin fold", "effusion", "uncertain"))
            assert set(json.loads(value)) == {"at", "seen", "sent", "iv", "data"}
        context = page.context
        again = context.new_page()  # the tab is closed without sending anything
        page.close()
        again.goto(url)
        expect(again.get_by_label("User name")).to_be_visible()
        _sign_in_here(again, "dr.typist")
        expect(again).to_have_url(url)
        offers = again.locator(".typed-offer")
        expect(offers).to_have_count(2)
        expect(again.locator("#impression .typed-offer q")).to_have_text(IMPRESSION)
        expect(again.locator("#finding-1 .typed-offer")).to_contain_text(COMMENT)
        expect(again.locator("#impression-text")).not_to_have_value(IMPRESSION)  # offered, not filled in unasked
        again.locator("#finding-1").get_by_role("button", name="Restore what I typed").click()
        expect(again.locator("#finding-1 input.comment")).to_have_value(COMMENT)
        expect(again.locator("#finding-1 select.status")).to_have_value("uncertain")
        expect(again.locator("#finding-1 input.comment")).to_be_focused()
        again.locator("#finding-1 button.modify").click()  # recorded now
        expect(again.get_by_test_id("decision-1")).to_contain_text("changed to uncertain by dr.typist")
        assert [(d["finding"], d["decision"], d["status"], d["comment"]) for d in site.decisions(study_uid)] == [
            (label, "modify", "uncertain", COMMENT)
        ]
        expect(again.locator("#finding-1 .typed-offer")).to_have_count(0)  # recorded: no longer kept or offered
        expect(again.locator("#impression .typed-offer")).to_have_count(1)  # still not recorded
        assert len(_stored(again)) == 1
        again.locator("#impression").get_by_role("button", name="Discard it").click()
        expect(again.locator(".typed-offer")).to_have_count(0)
        assert _stored(again) == {}


def test_another_account_is_not_offered_it_and_old_entries_go(browser: Any, site: Site) -> None:
    url = f"{site.url}{study_path(site.store, site.studies['rules'])}"
    handle = url.rsplit("/", 2)[1]
    with tab(browser) as page:
        sign_in(page, site.url, "dr.typist")
        page.goto(url)
        page.locator("#impression-text").fill("Typed by dr.typist, not sent.")
        page.keyboard.press("Escape")  # leaves the field (its change event keeps it once more)
        page.wait_for_timeout(300)  # the encryption is asynchronous
        [(key, value)] = _stored(page).items()
        entry = json.loads(value)
        older = key.replace(f".{handle}.1.", f".{handle}.0.")  # the same text kept for a revision 0 (superseded)
        stale = key.replace(".(impression).", ".Edema.")
        assert len({key, older, stale}) == 3
        page.evaluate(
            "([older, stale, value, old]) => { localStorage.setItem(older, value); localStorage.setItem(stale, old); }",
            [older, stale, value, json.dumps({**entry, "at": entry["at"] - 13 * 3600 * 1000})],
        )
        page.get_by_role("button", name="Sign out").click()
        sign_in(page, site.url, "dr.other")
        page.goto(url)
        expect(page.locator("#impression-text")).to_be_visible()
        page.wait_for_timeout(300)
        expect(page.locator(".typed-offer")).to_have_count(0)  # dr.typist's text: another account's key
        assert set(_stored(page)) == {key}  # revision 0's and the 13-hour-old entry are gone
        page.get_by_role("button", name="Sign out").click()
        sign_in(page, site.url, "dr.typist")
        page.goto(url)
        expect(page.locator("#impression .typed-offer q")).to_have_text("Typed by dr.typist, not sent.")


def test_over_plain_http_the_text_is_kept_encrypted_and_survives_closing_the_tab(browser: Any, site: Site) -> None:
    """Plain HTTP to a host name that is not localhost (``radtrace.test``, resolved to this machine by Chromium's own
    resolver rule) is not a secure context: no WebCrypto. Before: the text was kept, plain, in the tab's
    sessionStorage only, and gone with the tab (a console on the hospital network without TLS). Now aes_gcm.js
    encrypts it into localStorage as WebCrypto would (Python's AES-GCM opens it with the page's key), and it is
    offered back in another tab once the session expired and the tab was closed."""
    port = site.url.rsplit(":", 1)[1]
    url = f"http://{HOST}:{port}{study_path(site.store, site.studies['rules'])}"
    typed = "typed over plain HTTP: «pneumothorax?» 気胸"
    resolving = browser.browser_type.launch(  # the module's Playwright, a second Chromium with the resolver rule
        executable_path=shutil.which("chromium"), args=["--no-sandbox", f"--host-resolver-rules=MAP {HOST} 127.0.0.1"]
    )
    try:
        with tab(resolving, allowed=("status of 401",)) as page:
            sign_in(page, f"http://{HOST}:{port}", "dr.typist")
            page.goto(url)
            assert page.evaluate("[window.isSecureContext, typeof crypto.subtle]") == [False, "undefined"]
            key = base64.b64decode(str(page.locator("section.review").get_attribute("data-typed-key")))
            page.locator("#finding-0 input.comment").fill(typed)
            page.keyboard.press("Escape")
            wait_until(page, "localStorage.length === 1")
            assert page.evaluate("sessionStorage.length") == 0
            [(name, value)] = page.evaluate("Object.entries(Object.assign({}, localStorage))")
            assert name.startswith("radtrace.typed.")
            assert not any(part in name for part in (*PATIENT, site.studies["rules"]))
            entry = json.loads(value)
            assert set(entry) == {"at", "seen", "sent", "iv", "data"}
            assert "plain HTTP" not in value
            opened = AESGCM(key).decrypt(base64.b64decode(entry["iv"]), base64.b64decode(entry["data"]), None)
            assert json.loads(opened) == {"comment": typed}
            page.context.clear_cookies()  # the session expired
            again = page.context.new_page()  # and the tab is closed without sending anything
            page.close()
            again.goto(url)
            _sign_in_here(again, "dr.typist")
            expect(again).to_have_url(url)
            expect(again.locator("#finding-0 .typed-offer q")).to_have_text(typed)
            again.locator("#finding-0").get_by_role("button", name="Restore what I typed").click()
            expect(again.locator("#finding-0 input.comment")).to_have_value(typed)
            expect(again.locator(".typed-offer")).to_have_count(0)
    finally:
        resolving.close()


def test_the_scripts_aes_gcm_is_webcryptos_and_pythons(browser: Any, site: Site) -> None:
    """aes_gcm.js (what keeps typed text outside a secure context) against two references, on 16-, 24- and 32-byte
    keys and texts of 0 to 3000 bytes: Chromium's WebCrypto in the same page (localhost is a secure context; it has
    no 192-bit AES) and Python's cryptography; a changed byte is refused (null), as WebCrypto refuses it."""
    chance = random.Random(20261206)
    lengths = [*range(0, 40), 255, 256, 257, *(chance.randrange(0, 3000) for _ in range(40))]
    cases = [
        (chance.randbytes(chance.choice([16, 24, 32])), chance.randbytes(12), chance.randbytes(n)) for n in lengths
    ]
    with tab(browser) as page:
        page.goto(f"{site.url}/console/login")
        answers = page.evaluate(
            """async (cases) => {
                const h = (t) => Uint8Array.from(t.match(/../g) || [], (b) => parseInt(b, 16));
                const x = (b) => Array.from(new Uint8Array(b), (v) => v.toString(16).padStart(2, "0")).join("");
                const out = [];
                for (const [k, iv, text] of cases) {
                    const ours = window.RadtraceAesGcm.encrypt(h(k), h(iv), h(text));
                    let theirs = ours; // Chromium's WebCrypto has no 192-bit AES: Python's is the reference
                    if (k.length !== 48) {
                        const key = await crypto.subtle.importKey("raw", h(k), "AES-GCM", false, ["encrypt"]);
                        theirs = await crypto.subtle.encrypt({ name: "AES-GCM", iv: h(iv) }, key, h(text));
                    }
                    const opened = window.RadtraceAesGcm.decrypt(h(k), h(iv), new Uint8Array(theirs));
                    const changed = Uint8Array.from(ours);
                    changed[changed.length - 1 - (out.length % changed.length)] ^= 0x40;
                    const refused = window.RadtraceAesGcm.decrypt(h(k), h(iv), changed);
                    out.push([x(ours), x(theirs), opened && x(opened), refused]);
                }
                return out;
            }""",
            [(k.hex(), iv.hex(), text.hex()) for k, iv, text in cases],
        )
    assert len(answers) == len(cases)
    for (key, iv, text), (ours, webcrypto, opened, refused) in zip(cases, answers, strict=True):
        assert ours == webcrypto == AESGCM(key).encrypt(iv, text, None).hex(), (len(key), len(text))
        assert opened == text.hex()
        assert refused is None


def test_a_pasted_control_character_is_refused_with_its_reason_and_the_way_back_offers_the_text(
    browser: Any, site: Site
) -> None:
    """A comment pasted with a vertical tab (a word processor's line break) was recorded with it, invisible; now it
    is refused with its reason, the refusal leads back to the study, and there the typed text is offered back."""
    study_uid = site.studies["rules"]
    url = f"{site.url}{study_path(site.store, study_uid)}"
    pasted = "effusion\x0bsee prior"
    with tab(browser, allowed=("status of 422",)) as page:
        sign_in(page, site.url, "dr.typist")
        page.goto(url)
        page.locator("#finding-2 input.comment").fill(pasted)
        status = page.locator("#finding-2 select.status")
        status.select_option("present" if status.input_value() == "absent" else "absent")  # not the model's
        page.locator("#finding-2 button.modify").click()
        expect(page.locator("#problem-reason")).to_have_text(
            "comment: control characters (such as NUL) are not allowed; nothing was recorded"
        )
        assert site.decisions(study_uid) == []
        page.locator("#problem-back").focus()
        page.keyboard.press("Enter")
        expect(page).to_have_url(url)
        expect(page.locator("#finding-2 .typed-offer")).to_contain_text("see prior")
