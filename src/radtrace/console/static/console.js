// radtrace review console: keyboard shortcuts, window/level and zoom, evidence highlighting.
// Everything works without this script (plain forms and links); it only adds speed.
"use strict";
(function () {
  const $ = (sel, root) => (root || document).querySelector(sel);
  const $$ = (sel, root) => Array.from((root || document).querySelectorAll(sel));
  const typing = (el) => el && /^(INPUT|SELECT|TEXTAREA)$/.test(el.tagName);

  // --- selection of rows (worklist rows, or findings on the study page) ---
  let rows = [];
  let current = -1;
  // focusRow: a finding (or the impression) selected from the keyboard takes the focus, so a screen reader says its
  // name (the finding, what the model said, the current decision) and Tab goes on to its own controls.
  // scroll: false when the focus came in by itself (a click, Tab): the browser has shown the focused control, and a
  // scroll between a button's press and its release moved it from under the pointer, so the click was lost.
  function select(index, focusRow, scroll = true) {
    if (!rows.length || !Number.isFinite(index)) return;
    current = Math.max(0, Math.min(rows.length - 1, index));
    rows.forEach((row, i) => {
      row.classList.toggle("selected", i === current);
      if (i === current) row.setAttribute("aria-current", "true"); else row.removeAttribute("aria-current");
    });
    if (scroll) rows[current].scrollIntoView({ block: "nearest" });
    const row = rows[current];
    if (focusRow && row.hasAttribute("tabindex") && !row.contains(document.activeElement)) row.focus({ preventScroll: true });
    // a screen reader hears what j / k selected (the highlight alone is visual)
    const announce = $("#announce");
    if (announce) announce.textContent = "Selected: " + (rows[current].dataset.announce || rows[current].dataset.label || "");
    highlight(rows[current].dataset.label, rows[current].dataset.index);
  }
  function highlight(label, index) {
    $$(".sentence").forEach((s) => {
      const labels = (s.dataset.findings || "").split("|");
      s.classList.toggle("highlight", !!label && labels.includes(label));
    });
    $$(".box").forEach((b) => b.classList.toggle("focus", b.dataset.finding === String(index)));
  }

  // --- images: prepared / original, window/level (brightness/contrast of the 8-bit picture), zoom ---
  function setupViewer(figure) {
    const img = $("img", figure), canvas = $(".canvas", figure);
    const level = $(".level", figure), win = $(".window", figure), zoom = $(".zoom", figure);
    function apply() {
      const contrast = 10000 / Number(win.value) / 100;
      const brightness = 1 + Number(level.value) / 100;
      img.style.filter = "brightness(" + brightness + ") contrast(" + contrast + ")";
      canvas.style.width = Number(zoom.value) + "%";
    }
    [level, win, zoom].forEach((input) => input.addEventListener("input", apply));
    $(".reset", figure).addEventListener("click", () => { level.value = 0; win.value = 100; zoom.value = 100; apply(); });
    $$(".mode", figure).forEach((button) => button.addEventListener("click", () => showMode(figure, button.dataset.mode)));
    $$(".box", figure).forEach((box) => {
      box.style.left = 100 * Number(box.dataset.x) + "%";
      box.style.top = 100 * Number(box.dataset.y) + "%";
      box.style.width = 100 * Number(box.dataset.w) + "%";
      box.style.height = 100 * Number(box.dataset.h) + "%";
    });
    // Drag with the right button held: horizontal = window, vertical = level (as PACS viewers do).
    let drag = null;
    canvas.addEventListener("contextmenu", (e) => e.preventDefault());
    canvas.addEventListener("mousedown", (e) => { if (e.button === 2) drag = { x: e.clientX, y: e.clientY, w: +win.value, l: +level.value }; });
    window.addEventListener("mouseup", () => { drag = null; });
    window.addEventListener("mousemove", (e) => {
      if (!drag) return;
      win.value = drag.w + (e.clientX - drag.x) / 2; level.value = drag.l - (e.clientY - drag.y) / 3; apply();
    });
    apply();
  }
  function showMode(figure, mode) {
    const img = $("img", figure);
    img.src = figure.dataset[mode];
    img.alt = mode === "original" ? "original image" : "image as the model read it";
    $$(".mode", figure).forEach((b) => b.classList.toggle("active", b.dataset.mode === mode));
  }
  function zoomAll(delta) {
    $$(".viewer .zoom").forEach((z) => { z.value = Number(z.value) + delta; z.dispatchEvent(new Event("input")); });
  }

  function clickIn(row, selector) { const el = row && $(selector, row); if (el) el.click(); }

  function onKey(e) {
    const help = $("#help");
    if (e.key === "Escape") { if (typing(document.activeElement)) document.activeElement.blur(); if (help) help.hidden = true; return; }
    if (typing(document.activeElement) || e.ctrlKey || e.metaKey || e.altKey) return;
    const row = rows[current];
    const study = document.body.classList.contains("study");
    switch (e.key) {
      case "?": if (help) help.hidden = !help.hidden; break;
      case "j": select(current + 1, true); break;
      case "k": select(current - 1, true); break;
      case "Enter": if (!study && row) window.location = row.dataset.href; else return; break;
      case "n": { const next = $("#next-study") || $("#start"); if (next) next.click(); else return; break; }
      case "a": if (study) clickIn(row, "button.accept"); else return; break;
      case "r": if (study) clickIn(row, "button.reject"); else return; break;
      case "m": if (study && row) { const s = $("select.status, textarea.corrected", row); if (s) { s.focus(); s.dataset.pending = "modify"; } } else return; break;
      case "c": if (study && row) { const c = $("input.comment", row); if (c) c.focus(); } else return; break;
      case "A": case "R": {
        const form = $("#draft-form"); if (!form) return;
        form.dataset.pending = e.key === "A" ? "accept" : "reject";
        const reason = $("#draft-reason");
        if (e.key === "R" && reason.value.startsWith("RT-A")) reason.value = "RT-R1";
        if (e.key === "A" && !reason.value.startsWith("RT-A")) reason.value = "RT-A1";
        reason.focus(); break;
      }
      case "o": case "p": $$(".viewer").forEach((f) => showMode(f, e.key === "o" ? "original" : "prepared")); break;
      case "+": case "=": zoomAll(50); break;
      case "-": zoomAll(-50); break;
      case "0": $$(".viewer .reset").forEach((b) => b.click()); break;
      default: return;
    }
    e.preventDefault();
  }

  // Enter in a finding's comment or status field, or in the draft's reason, submits the pending decision.
  function onFieldKey(e) {
    if (e.key !== "Enter") return;
    const field = e.target;
    if (e.shiftKey && field.tagName === "TEXTAREA") return; // a new line in the impression
    const draft = field.closest("#draft-form");
    if (draft && draft.dataset.pending) { e.preventDefault(); $("button[value=" + draft.dataset.pending + "]", draft).click(); return; }
    const form = field.closest(".finding-form");
    if (!form) return;
    e.preventDefault();
    const pending = field.dataset.pending || (field.classList.contains("comment") ? "reject" : "modify");
    $("button[value=" + pending + "]", form).click();
  }

  // Keys pressed before the page is set up (rows, fields) are kept and replayed once it is, never dropped: the
  // script is loaded in <head> without defer, so this listener exists before any of the page is shown.
  let ready = false;
  const early = [];
  document.addEventListener("keydown", (e) => {
    if (ready) return onKey(e);
    const el = document.activeElement;
    if (el && el !== document.body && el !== document.documentElement) return; // a field or link has it
    // only the console's own keys: Tab, F5, Ctrl+R and the like keep doing what the browser does
    if (e.ctrlKey || e.metaKey || e.altKey || !(e.key.length === 1 || e.key === "Enter" || e.key === "Escape")) return;
    early.push({ key: e.key, shiftKey: e.shiftKey, ctrlKey: e.ctrlKey, metaKey: e.metaKey, altKey: e.altKey });
    e.preventDefault();
  });
  function replay(k) {
    const el = document.activeElement;
    const event = Object.assign({ preventDefault() {}, target: el }, k);
    if (typing(el) && k.key === "Enter") return onFieldKey(event);
    if (typing(el) && el.tagName !== "SELECT" && k.key.length === 1 && !k.ctrlKey && !k.metaKey && !k.altKey) {
      el.setRangeText(k.key, el.selectionStart, el.selectionEnd, "end"); // typed after c: into the comment
      return;
    }
    onKey(event);
  }

  // Text typed into a decision's form and not sent (a corrected impression, a comment, a chosen status) is not
  // lost by leaving the page (n, a link, the back button): the browser asks first. Sending a form never asks.
  let sending = false;
  document.addEventListener("submit", () => { sending = true; });
  // A decision can take seconds to be recorded when the database is slow: the form says at once that it is being
  // sent (a status a screen reader hears too), so nothing looks lost and no second key press seems needed (a repeat
  // is recorded once anyway). A form the page refuses to send (below: capture phase, stopped there) never says so.
  document.addEventListener("submit", (e) => {
    const form = e.target;
    if (e.defaultPrevented || !(form.classList.contains("finding-form") || form.id === "draft-form")) return;
    form.setAttribute("aria-busy", "true");
    let said = $(".sending", form);
    if (!said) {
      said = document.createElement("p");
      said.className = "sending";
      said.setAttribute("role", "status");
      form.appendChild(said);
    }
    const verb = { accept: "accepting", reject: "rejecting", modify: "modifying" }[e.submitter && e.submitter.value];
    said.textContent = "Sending" + (verb ? " (" + verb + ")" : "") + "… the page changes when it is recorded.";
  });
  // A page the back button brings back from the browser's cache is not sending anything.
  window.addEventListener("pageshow", (e) => {
    if (!e.persisted) return;
    sending = false;
    $$(".sending").forEach((said) => said.remove());
    $$("form[aria-busy]").forEach((form) => form.removeAttribute("aria-busy"));
  });
  // A decision the page can tell is self-contradictory is not sent: the reason is said beside the form (an alert,
  // one per form) and the text typed stays.
  function refuseBeside(e, form, text) {
    e.preventDefault();
    e.stopImmediatePropagation();
    let said = $(".unchanged", form);
    if (!said) {
      said = document.createElement("p");
      said.className = "unchanged";
      said.setAttribute("role", "alert");
      form.appendChild(said);
    }
    said.textContent = text;
  }
  // Modify with the model's own status still chosen (m, Enter before choosing) changes nothing: say so beside the
  // status list and send nothing, so the comment typed stays (the server refuses it too, 422).
  document.addEventListener("submit", (e) => {
    const form = e.target, button = e.submitter;
    if (!form.classList.contains("finding-form") || !button || button.value !== "modify") return;
    const status = $("select.status", form);
    if (!status || !status.selectedOptions.length || !status.selectedOptions[0].defaultSelected) return;
    refuseBeside(e, form, "The model says " + status.value + ": choose another status to modify it, or accept it.");
    status.focus();
    status.dataset.pending = "modify";
  }, true);
  // A whole-draft decision with a reason of the other verdict (Reject with "RT-A1 Agrees with my reading", Accept
  // with "RT-R1 …") contradicts itself: say so beside the reason list and send nothing (the server refuses it, 422).
  document.addEventListener("submit", (e) => {
    const form = e.target, button = e.submitter;
    if (form.id !== "draft-form" || !button) return;
    const reason = $("#draft-reason", form);
    const against = button.value === "reject" ? "RT-A" : "RT-R";
    if (!reason || !reason.value.startsWith(against)) return;
    refuseBeside(e, form, reason.selectedOptions[0].textContent + " is not a reason for " +
      (button.value === "reject" ? "rejecting" : "accepting") + " the draft: choose one that is.");
    reason.focus();
    form.dataset.pending = button.value;
  }, true);
  function unsent() {
    return $$(".finding-form textarea, .finding-form input.comment, #draft-form input[name=comment]")
      .some((f) => f.value !== f.defaultValue)
      || $$(".finding-form select.status").some((s) => s.selectedOptions.length && !s.selectedOptions[0].defaultSelected);
  }
  window.addEventListener("beforeunload", (e) => {
    if (sending || !unsent()) return;
    e.preventDefault();
    e.returnValue = ""; // older browsers ask only when this is set
  });

  document.addEventListener("DOMContentLoaded", () => {
    // on a study: the findings, then the impression (when there is one to decide on)
    rows = $$("#worklist tr.row").concat($$("#findings tr.finding-row, #impression.finding-row"));
    $$(".viewer").forEach(setupViewer);
    $$("#worklist tr.row").forEach((row, i) => row.addEventListener("click", (e) => { if (e.target.tagName !== "A") { select(i); } }));
    $$("#findings tr.finding-row, #impression.finding-row").forEach((row, i) => row.addEventListener("focusin", () => select(i, false, false)));
    $$(".finding-form input, .finding-form select, .finding-form textarea, #draft-form select, #draft-form input").forEach((f) => f.addEventListener("keydown", onFieldKey));
    // ?focus=N selects the N-th row and gives it the focus (after a decision: the next finding, so the keyboard
    // goes on from there); anything else selects the first.
    const asked = new URLSearchParams(window.location.search).get("focus");
    const focus = Number.parseInt(asked || "0", 10);
    if (rows.length) select(Number.isInteger(focus) ? focus : 0, asked !== null && Number.isInteger(focus));
    ready = true;
    early.splice(0).forEach(replay);
  });
})();

// --- audit explorer: follow a chain verification (the page itself says how to reload without scripts) ---
(function () {
  "use strict";
  function follow(bar) {
    const count = document.getElementById("verify-count");
    function poll() {
      fetch(bar.dataset.poll, { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then((response) => {
          // signed out or refused: the page itself (a GET, never a re-sent POST) says why
          if (response.status >= 400 && response.status < 500) return { running: false };
          if (!response.ok) throw new Error("status " + response.status);
          return response.json();
        })
        .then((state) => {
          if (!state.running) { window.location.assign(window.location.pathname); return; }
          bar.max = Math.max(state.total, 1);
          bar.value = Math.min(state.checked, bar.max);
          if (count) count.textContent = state.checked + " of " + (state.total || "?") + " events checked";
          window.setTimeout(poll, 400);
        })
        .catch(() => window.setTimeout(poll, 2000));
    }
    window.setTimeout(poll, 200);
  }
  document.addEventListener("DOMContentLoaded", () => {
    const bar = document.querySelector("#verify-progress[data-poll]");
    if (bar) follow(bar);
  });
})();

// --- text typed into a decision's form and not recorded yet, kept in this browser ---
// A session that ends while a radiologist types (idle timeout, signed out elsewhere) used to lose the text once the
// tab was closed or left: nothing had been sent. Each form's typed fields (comment, corrected status, impression,
// draft reason) are kept as they change, under a key naming only the study's console handle, the revision, the
// finding's label and the account's key id (never a patient identifier), and offered back when the same account
// opens the same revision again. They go to localStorage encrypted with AES-GCM under the account's key, which only
// a signed-in page of that account carries (the page names it): with WebCrypto in a secure context (HTTPS, or
// localhost), and elsewhere (plain HTTP to a host name, where the browser gives no crypto.subtle) with the same
// AES-GCM in script (aes_gcm.js), so closing the tab loses nothing there either. Only a browser with neither keeps
// them, plain, in this tab's sessionStorage. An entry goes when its decision is recorded, when a newer revision of
// the study is open, when it is discarded, and after 12 hours (one shift).
(function () {
  "use strict";
  const PREFIX = "radtrace.typed.";
  const MAX_AGE_MS = 12 * 3600 * 1000;
  const b64 = (bytes) => btoa(String.fromCharCode(...new Uint8Array(bytes)));
  const unb64 = (text) => Uint8Array.from(atob(text), (c) => c.charCodeAt(0));

  function stores() {
    const found = [];
    for (const store of [window.localStorage, window.sessionStorage]) {
      try { if (store) found.push(store); } catch (e) { /* storage refused (private mode): nothing is kept */ }
    }
    return found;
  }

  function purge(study, revision, latest) {
    const now = Date.now();
    stores().forEach((store) => {
      for (let i = store.length - 1; i >= 0; i--) {
        const key = store.key(i);
        if (!key || !key.startsWith(PREFIX)) continue;
        const parts = key.slice(PREFIX.length).split(".");
        let entry = null;
        try { entry = JSON.parse(store.getItem(key)); } catch (e) { entry = null; }
        const old = !entry || !(now - entry.at < MAX_AGE_MS);
        const sameStudy = parts[0] === study;
        const kept = Number(parts[1]);
        const stale = sameStudy && (latest ? kept < revision : kept <= revision);
        if (old || stale) store.removeItem(key);
      }
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    const review = document.querySelector("section.review[data-typed-id]");
    if (!review) return;
    const study = review.dataset.study, revision = Number(review.dataset.revision), latest = review.dataset.latest === "1";
    purge(study, revision, latest);
    if (!latest) return; // decisions are recorded on the latest revision only
    const subtle = window.isSecureContext && window.crypto && window.crypto.subtle;
    // outside a secure context: the script's AES-GCM (crypto.getRandomValues is there for the IV)
    const scripted = !subtle && window.RadtraceAesGcm && window.crypto && window.crypto.getRandomValues
      ? window.RadtraceAesGcm : null;
    const sealed = Boolean(subtle || scripted);
    let store = null;
    try { store = sealed ? window.localStorage : window.sessionStorage; } catch (e) { return; }
    if (!store) return;
    function rawKey() {
      try { return unb64(review.dataset.typedKey || ""); } catch (e) { return null; }
    }
    const keyPromise = subtle
      ? subtle.importKey("raw", rawKey(), "AES-GCM", false, ["encrypt", "decrypt"]).catch(() => null)
      : Promise.resolve(scripted ? rawKey() : null);

    async function seal(values) {
      const key = await keyPromise;
      if (!sealed) return { plain: values };
      if (!key || (scripted && key.length !== 32)) return null; // no key on the page: nothing kept
      const iv = window.crypto.getRandomValues(new Uint8Array(12));
      const text = new TextEncoder().encode(JSON.stringify(values));
      const data = subtle ? await subtle.encrypt({ name: "AES-GCM", iv }, key, text) : scripted.encrypt(key, iv, text);
      return { iv: b64(iv), data: b64(data) };
    }
    async function open(entry) {
      if (entry.plain) return sealed ? null : entry.plain;
      const key = await keyPromise;
      if (!key || !entry.iv) return null;
      try {
        const iv = unb64(entry.iv), data = unb64(entry.data);
        const text = subtle ? await subtle.decrypt({ name: "AES-GCM", iv }, key, data) : scripted.decrypt(key, iv, data);
        return text ? JSON.parse(new TextDecoder().decode(text)) : null;
      } catch (e) { return null; } // another account's, or damaged: not offered
    }

    const forms = Array.from(document.querySelectorAll("form.finding-form, #draft-form"));
    forms.forEach((form) => {
      const label = form.id === "draft-form" ? "(draft)" : form.classList.contains("impression-form") ? "(impression)"
        : (form.querySelector("input[name=label]") || {}).value || "";
      const key = PREFIX + [study, revision, encodeURIComponent(label).replace(/\./g, "%2E"), review.dataset.typedId].join(".");
      const seen = () => (form.querySelector("input[name=seen]") || {}).value || "";
      const fields = () => Array.from(form.querySelectorAll("textarea, input[name=comment], select"));
      function typed() {
        const values = {};
        fields().forEach((f) => {
          const changed = f.tagName === "SELECT"
            ? f.selectedOptions.length && !f.selectedOptions[0].defaultSelected : f.value !== f.defaultValue;
          if (changed) values[f.name] = f.value;
        });
        return values;
      }
      let writing = Promise.resolve();
      function keep() {
        const values = typed();
        writing = writing.then(async () => {
          if (!Object.keys(values).length) { store.removeItem(key); return; }
          const sealed = await seal(values);
          if (sealed) store.setItem(key, JSON.stringify(Object.assign({ at: Date.now(), seen: seen(), sent: false }, sealed)));
        }).catch(() => {});
      }
      form.addEventListener("input", keep);
      form.addEventListener("change", keep);
      form.addEventListener("submit", () => { // kept until the page shows it recorded (or the study moves on)
        const entry = JSON.parse(store.getItem(key) || "null");
        if (entry) store.setItem(key, JSON.stringify(Object.assign(entry, { sent: true })));
      });

      let entry = null;
      try { entry = JSON.parse(store.getItem(key) || "null"); } catch (e) { entry = null; }
      if (!entry) return;
      if (entry.sent && entry.seen !== seen()) { store.removeItem(key); return; } // recorded since it was sent
      open(entry).then((values) => {
        if (!values || !Object.keys(values).length) return;
        const offer = document.createElement("div");
        offer.className = "typed-offer";
        offer.setAttribute("role", "status");
        const when = new Date(entry.at).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
        const text = document.createElement("p");
        text.textContent = "Not recorded: you typed this here at " + when + " (kept in this browser)";
        const list = document.createElement("ul");
        Object.entries(values).forEach(([name, value]) => {
          const item = document.createElement("li");
          item.textContent = name + ": ";
          const quote = document.createElement("q");
          quote.setAttribute("dir", "auto");
          quote.textContent = value;
          item.appendChild(quote);
          list.appendChild(item);
        });
        const restore = document.createElement("button");
        restore.type = "button";
        restore.className = "typed-restore";
        restore.textContent = "Restore what I typed";
        const discard = document.createElement("button");
        discard.type = "button";
        discard.className = "typed-discard";
        discard.textContent = "Discard it";
        restore.addEventListener("click", () => {
          let first = null;
          fields().forEach((f) => { if (f.name in values) { f.value = values[f.name]; first = first || f; } });
          offer.remove();
          if (first) first.focus();
        });
        discard.addEventListener("click", () => { store.removeItem(key); offer.remove(); });
        offer.append(text, list, restore, " ", discard);
        form.before(offer);
      });
    });
  });
})();
