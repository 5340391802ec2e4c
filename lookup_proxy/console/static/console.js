// The security console: vanilla JavaScript on top of the admin API (/admin/...).
// The admin token lives in sessionStorage only (this tab, until it closes) and travels in the
// Authorization header; nothing the API returns is ever parsed as HTML (textContent only).
"use strict";

(function () {
  const TOKEN_KEY = "lookup-proxy.admin-token";
  const $ = (id) => document.getElementById(id);
  let currentCase = null;
  let lockedNow = new Set(); // employees locked as of the last lock list

  class Problem extends Error {
    constructor(status, detail) {
      super(detail);
      this.status = status;
    }
  }

  function token() {
    return sessionStorage.getItem(TOKEN_KEY);
  }

  async function api(method, path, body) {
    const headers = { Authorization: "Bearer " + token(), Accept: "application/json" };
    const init = { method, headers, cache: "no-store", credentials: "omit", redirect: "error" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch (error) {
      throw new Problem(0, "The proxy did not answer: " + error.message);
    }
    let data = null;
    try {
      data = await response.json();
    } catch (error) {
      data = null;
    }
    if (!response.ok) {
      const detail = data && data.detail ? data.detail : response.status + " " + response.statusText;
      if (response.status === 401) {
        signOut("Your token was not accepted: " + detail);
      }
      throw new Problem(response.status, detail);
    }
    return data;
  }

  // -- small DOM helpers ------------------------------------------------------------------

  function el(tag, text, className) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (className) node.className = className;
    return node;
  }

  function row(cells) {
    const tr = document.createElement("tr");
    for (const cell of cells) {
      const td = document.createElement("td");
      if (cell instanceof Node) td.appendChild(cell);
      else td.textContent = cell === null || cell === undefined ? "" : String(cell);
      tr.appendChild(td);
    }
    return tr;
  }

  function pad(n) {
    return String(n).padStart(2, "0");
  }

  function when(value) {
    if (value === null || value === undefined || value === "") return "";
    const date = typeof value === "number" ? new Date(value * 1000) : new Date(value);
    if (Number.isNaN(date.getTime())) return String(value);
    return (
      date.getFullYear() + "-" + pad(date.getMonth() + 1) + "-" + pad(date.getDate()) + " " +
      pad(date.getHours()) + ":" + pad(date.getMinutes()) + ":" + pad(date.getSeconds())
    );
  }

  function number(record) {
    return record.last4 ? "…" + record.last4 : "";
  }

  function ruleAndFlags(record) {
    const parts = [];
    if (record.rule) parts.push(record.rule);
    if (Array.isArray(record.flags) && record.flags.length) parts.push("flags: " + record.flags.join(", "));
    return parts.join("; ");
  }

  function lookupCells(record, withEmployee) {
    const cells = [when(record.at)];
    if (withEmployee) cells.push(record.employee || "unknown");
    cells.push(record.store || "", record.reason || "", record.reference || "", number(record));
    cells.push(record.decision || "", record.outcome || "(no outcome)", ruleAndFlags(record));
    return cells;
  }

  function say(message, kind) {
    const status = $("status");
    status.textContent = message;
    status.className = kind || "info";
    status.hidden = !message;
  }

  function failed(error) {
    say(error.message, "error");
  }

  // -- signing in and out -----------------------------------------------------------------

  function signedIn(yes) {
    $("login").hidden = yes;
    $("console").hidden = !yes;
    $("who").hidden = !yes;
  }

  function signOut(message) {
    sessionStorage.removeItem(TOKEN_KEY);
    currentCase = null;
    $("case").hidden = true;
    signedIn(false);
    say(message || "", message ? "error" : "info");
  }

  async function signIn(event) {
    event.preventDefault();
    const value = $("token").value.trim();
    $("token").value = "";
    if (!value) return;
    sessionStorage.setItem(TOKEN_KEY, value);
    try {
      await loadCases();
    } catch (error) {
      if (error.status !== 401) signOut("Cannot use the console: " + error.message);
      return;
    }
    signedIn(true);
    say("");
    loadLocks().catch(failed);
  }

  // -- cases ------------------------------------------------------------------------------

  async function fetchCases(filter) {
    if (filter !== "unresolved") return (await api("GET", "/admin/cases?status=" + filter)).cases;
    const [open, acknowledged] = await Promise.all([
      api("GET", "/admin/cases?status=open"),
      api("GET", "/admin/cases?status=acknowledged"),
    ]);
    return open.cases.concat(acknowledged.cases).sort((a, b) => (a.opened_at < b.opened_at ? 1 : -1));
  }

  async function loadCases() {
    const cases = await fetchCases($("case-filter").value);
    const body = $("case-list").querySelector("tbody");
    body.replaceChildren();
    for (const c of cases) {
      const open = el("button", "Open");
      open.type = "button";
      open.addEventListener("click", () => showCase(c.id).catch(failed));
      const tr = row([c.id, c.employee, c.store || "", (c.rules || []).join(", "), when(c.opened_at), c.status, c.locked ? "locked" : "", open]);
      tr.dataset.case = c.id;
      tr.className = "status-" + c.status;
      body.appendChild(tr);
    }
    $("no-cases").hidden = cases.length > 0;
    $("case-list").hidden = cases.length === 0;
  }

  async function showCase(id) {
    const [c] = await Promise.all([api("GET", "/admin/cases/" + encodeURIComponent(id)), loadLocks()]);
    currentCase = c;
    $("case-id").textContent = c.id;
    const facts = $("case-facts");
    facts.replaceChildren();
    const items = [
      ["Employee", c.employee],
      ["Store", [c.store, c.region].filter(Boolean).join(" · ")],
      ["Status", c.status + (c.resolution ? " (" + c.resolution + ")" : "")],
      ["Rules", (c.rules || []).join(", ")],
      ["Opened", when(c.opened_at)],
      ["Raised again", c.raised || 0],
      ["Locked now", lockedNow.has(c.employee) ? "yes" : "no"],
    ];
    for (const [term, value] of items) {
      facts.appendChild(el("dt", term));
      facts.appendChild(el("dd", value));
    }
    const events = $("case-events");
    events.replaceChildren();
    for (const e of c.events || []) {
      const parts = [when(e.at), e.event];
      if (e.by) parts.push("by " + e.by);
      if (e.rules && e.rules.length) parts.push("rules " + e.rules.join(", "));
      const item = el("li", parts.join(" · "));
      if (e.note) item.appendChild(el("q", e.note));
      events.appendChild(item);
    }
    const evidence = c.evidence || [];
    const body = $("evidence").querySelector("tbody");
    body.replaceChildren(...evidence.map((r) => row(lookupCells(r, false))));
    $("no-evidence").hidden = evidence.length > 0;
    $("evidence").hidden = evidence.length === 0;
    $("case-actions").hidden = c.status === "resolved";
    $("acknowledge-form").hidden = c.status !== "open";
    $("resolve-unlock").checked = lockedNow.has(c.employee);
    $("case").hidden = false;
    $("case").scrollIntoView({ block: "nearest" });
  }

  async function acknowledge(event) {
    event.preventDefault();
    if (!currentCase) return;
    const note = $("acknowledge-note").value.trim();
    await api("POST", "/admin/cases/" + encodeURIComponent(currentCase.id) + "/acknowledge", { note: note || null });
    $("acknowledge-note").value = "";
    say("Case " + currentCase.id + " acknowledged.");
    await Promise.all([showCase(currentCase.id), loadCases()]);
  }

  async function resolve(event) {
    event.preventDefault();
    if (!currentCase) return;
    const note = $("resolve-note").value.trim();
    if (!note) {
      say("Say in a note how the case was resolved.", "error");
      return;
    }
    const id = currentCase.id;
    const body = { note, resolution: $("resolution").value, unlock: $("resolve-unlock").checked };
    await api("POST", "/admin/cases/" + encodeURIComponent(id) + "/resolve", body);
    $("resolve-note").value = "";
    say("Case " + id + " resolved (" + body.resolution + ").");
    await Promise.all([showCase(id), loadCases()]);
  }

  // -- locks ------------------------------------------------------------------------------

  async function loadLocks() {
    const { locks } = await api("GET", "/admin/locks");
    lockedNow = new Set(locks.map((lock) => lock.employee));
    const body = $("lock-list").querySelector("tbody");
    body.replaceChildren();
    for (const lock of locks) {
      const form = el("form", undefined, "unlock");
      const note = el("input");
      note.placeholder = "note";
      note.maxLength = 2000;
      note.setAttribute("aria-label", "note for unlocking " + lock.employee);
      const button = el("button", "Unlock");
      button.type = "submit";
      form.append(note, button);
      form.addEventListener("submit", (event) => {
        event.preventDefault();
        unlock(lock.employee, note.value.trim()).catch(failed);
      });
      const tr = row([lock.employee, lock.rule, when(lock.at), when(lock.until), (lock.because || []).join(", "), form]);
      tr.dataset.employee = lock.employee;
      body.appendChild(tr);
    }
    $("no-locks").hidden = locks.length > 0;
    $("lock-list").hidden = locks.length === 0;
  }

  async function unlock(employee, note) {
    await api("DELETE", "/admin/locks/" + encodeURIComponent(employee), note ? { note } : undefined);
    say(employee + " unlocked.");
    await loadLocks();
  }

  async function lock(event) {
    event.preventDefault();
    const employee = $("lock-employee").value.trim();
    const note = $("lock-note").value.trim();
    if (!employee) return;
    await api("PUT", "/admin/locks/" + encodeURIComponent(employee), note ? { note } : undefined);
    $("lock-employee").value = "";
    $("lock-note").value = "";
    say(employee + " locked.");
    await loadLocks();
  }

  // -- search -----------------------------------------------------------------------------

  function searchKind(kind, text) {
    if (kind !== "auto") return kind;
    return /^\+?[0-9][0-9\s().-]{7,}$/.test(text) ? "number" : "employee";
  }

  async function search(event) {
    event.preventDefault();
    const text = $("search-text").value.trim();
    if (!text) return;
    const kind = searchKind($("search-kind").value, text);
    const query = new URLSearchParams({ [kind]: text, limit: "200" });
    const { records } = await api("GET", "/admin/audit?" + query.toString());
    const body = $("results").querySelector("tbody");
    body.replaceChildren(...records.map((r) => row(lookupCells(r, true))));
    $("results").hidden = records.length === 0;
    const what = kind === "number" ? "that number" : kind + " " + text;
    const summary = $("search-summary");
    summary.textContent = records.length
      ? records.length + " lookup(s) of " + what + ", newest first."
      : "No lookups of " + what + " in the audit trail.";
    summary.hidden = false;
  }

  // -- wiring -----------------------------------------------------------------------------

  function guarded(handler) {
    return (event) => {
      handler(event).catch(failed);
    };
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("login-form").addEventListener("submit", (event) => {
      signIn(event).catch(failed);
    });
    $("sign-out").addEventListener("click", () => signOut());
    $("case-filter").addEventListener("change", guarded(async () => loadCases()));
    $("refresh").addEventListener("click", guarded(async () => Promise.all([loadCases(), loadLocks()])));
    $("close-case").addEventListener("click", () => {
      currentCase = null;
      $("case").hidden = true;
    });
    $("acknowledge-form").addEventListener("submit", guarded(acknowledge));
    $("resolve-form").addEventListener("submit", guarded(resolve));
    $("lock-form").addEventListener("submit", guarded(lock));
    $("search-form").addEventListener("submit", guarded(search));
    if (token()) {
      Promise.all([loadCases(), loadLocks()])
        .then(() => signedIn(true))
        .catch((error) => {
          if (error.status !== 401) signOut("Cannot use the console: " + error.message);
        });
    } else {
      signedIn(false);
    }
  });
})();
