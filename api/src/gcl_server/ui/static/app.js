// The Concurrency page: plain JavaScript, no build step. Data from /api/ui (one request per refresh) and the
// limits API for changes. Text is only ever set as text (never parsed as HTML): names may hold any character.
"use strict";
(() => {
  const KEY = "gcl.apiKey";
  const REFRESH_MS = 1000;
  const BUSY_FACTOR = 20; // wait at least 20x as long as the last answer took: a slow answer means a busy server
  const PAGE_SIZE = 50;
  const LIMITS = "/api/v2/concurrency_limits";
  const state = {
    keysRequired: false,
    scope: null,
    skew: 0, // server clock minus this browser's, from the last answer
    generation: 0, // bumps when the view changes: stale refresh loops stop
    list: { q: "", sort: "name", desc: false, offset: 0 },
  };
  const main = () => document.getElementById("main");
  const canAdmin = () => state.scope === "admin";

  // ---------- DOM helpers ----------
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
      else if (k === "text") el.textContent = v;
      else if (k === "dataset") Object.assign(el.dataset, v);
      else el.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children.flat()) {
      if (c !== null && c !== undefined && c !== false) el.append(c instanceof Node ? c : String(c));
    }
    return el;
  }
  const setText = (el, text) => {
    if (el.textContent !== text) el.textContent = text;
  };
  const announce = (text) => setText(document.getElementById("live"), text);

  // ---------- Formatting for people ----------
  const intFmt = new Intl.NumberFormat();
  const decFmt = new Intl.NumberFormat(undefined, { maximumFractionDigits: 2 });
  const exactFmt = new Intl.NumberFormat(undefined, { minimumFractionDigits: 2, maximumFractionDigits: 3 });
  const rtf = new Intl.RelativeTimeFormat(undefined, { numeric: "auto", style: "short" });
  const num = (n) => (Number.isInteger(n) ? intFmt.format(n) : decFmt.format(n));
  const serverNow = () => Date.now() + state.skew;
  const plural = (n, word) => `${intFmt.format(n)} ${word}${n === 1 ? "" : "s"}`;

  function relative(iso) {
    if (!iso) return "—";
    const seconds = (Date.parse(iso) - serverNow()) / 1000;
    const abs = Math.abs(seconds);
    if (abs < 1) return "now";
    const units = [["day", 86400], ["hour", 3600], ["minute", 60], ["second", 1]];
    for (const [unit, size] of units) {
      if (abs >= size || unit === "second") return rtf.format(Math.round(seconds / size), unit);
    }
    return "";
  }
  const exact = (iso) => (iso ? `${new Date(iso).toLocaleString()} (${iso})` : "");
  function timeEl(iso) {
    return h("time", { datetime: iso || "", title: exact(iso) }, relative(iso));
  }
  function updateTime(el, iso) {
    if (el.getAttribute("datetime") !== (iso || "")) {
      el.setAttribute("datetime", iso || "");
      el.title = exact(iso);
    }
    setText(el, relative(iso));
  }
  function holderText(holder) {
    if (!holder) return "—";
    const who = [holder.type, holder.id].filter(Boolean).join(" ");
    return holder.label ? `${holder.label} (${who})` : who || "—";
  }

  // ---------- API ----------
  class ApiError extends Error {
    constructor(status, body) {
      super((body && body.message) || `HTTP ${status}`);
      this.status = status;
      this.body = body || {};
    }
  }
  async function api(method, path, body, extraHeaders) {
    const headers = { Accept: "application/json", ...(extraHeaders || {}) };
    const key = sessionStorage.getItem(KEY);
    if (key) headers.Authorization = `Bearer ${key}`;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "omit",
      cache: "no-store",
    });
    const text = await response.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      data = null;
    }
    if (response.status === 401 && state.keysRequired !== false) {
      sessionStorage.removeItem(KEY);
      showKeyForm("The server no longer accepts this key. Enter a valid API key.");
      throw new ApiError(401, data);
    }
    if (!response.ok) throw new ApiError(response.status, data);
    if (data && data.now) state.skew = Date.parse(data.now) - Date.now();
    return { data, headers: response.headers };
  }
  const limitPath = (idOrName) => `${LIMITS}/${encodeURIComponent(idOrName)}`;

  // ---------- Session: keys and scope ----------
  async function loadSession() {
    const { data } = await api("GET", "/api/ui/session");
    state.keysRequired = data.keys_required;
    state.scope = data.scope;
    const who = document.getElementById("who");
    who.hidden = !data.keys_required || !data.scope;
    const labels = { admin: "admin key", acquire: "acquire key (view only here)", read: "read-only key" };
    setText(document.getElementById("who-scope"), labels[data.scope] || "");
    return data;
  }

  function showKeyForm(message) {
    stopRefresh();
    document.getElementById("who").hidden = true;
    const input = h("input", {
      id: "api-key", type: "password", autocomplete: "off", spellcheck: "false", required: true,
      "aria-describedby": "api-key-help api-key-error",
    });
    const error = h("p", { class: "form-error", id: "api-key-error", role: "alert" }, message || "");
    const form = h("form", { class: "panel keyform", id: "key-form" },
      h("h1", { text: "API key needed" }),
      h("p", {}, "This GCL server is protected by API keys. Enter yours to see and manage its limits."),
      h("div", { class: "field" },
        h("label", { for: "api-key" }, "API key"),
        input,
        h("small", { id: "api-key-help" },
          "Kept in this browser tab only (sessionStorage) and sent as a bearer header; no cookie is set.")),
      error,
      h("div", { class: "buttons" }, h("button", { type: "submit", class: "primary" }, "Use this key")));
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const key = input.value.trim();
      if (!key) {
        setText(error, "Enter a key.");
        return;
      }
      sessionStorage.setItem(KEY, key);
      const data = await loadSession().catch(() => null);
      if (!data || !data.scope) {
        sessionStorage.removeItem(KEY);
        setText(error, "That key was not accepted by the server. Check it and try again.");
        input.setAttribute("aria-invalid", "true");
        input.focus();
        return;
      }
      route();
    });
    main().replaceChildren(form);
    input.focus();
  }

  // ---------- Refresh loop: one request at a time, about every second, paused in hidden tabs ----------
  function startRefresh(fn) {
    const generation = ++state.generation;
    let interval = REFRESH_MS;
    const loop = async () => {
      if (generation !== state.generation) return;
      if (document.hidden) {
        state.resume = loop;
        return;
      }
      try {
        const started = performance.now();
        await fn();
        interval = Math.max(REFRESH_MS, Math.min(10000, BUSY_FACTOR * (performance.now() - started)));
        markFresh(true, null, interval);
      } catch (error) {
        if (generation !== state.generation) return;
        if (error.status === 401) return;
        markFresh(false, error);
        if (error.status === 404 && fn.stopOn404) return;
      }
      if (generation === state.generation) state.timer = setTimeout(loop, interval);
    };
    loop();
  }
  function stopRefresh() {
    state.generation++;
    clearTimeout(state.timer);
  }
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && state.resume) {
      const resume = state.resume;
      state.resume = null;
      resume();
    }
  });
  function markFresh(ok, error, interval) {
    const line = document.getElementById("status-line");
    if (!line) return;
    line.classList.toggle("stale", !ok);
    if (ok) {
      const every = interval <= REFRESH_MS * 1.5 ? "every second" : `every ${decFmt.format(Math.round(interval / 100) / 10)} s (the server is busy)`;
      setText(line, `Live · refreshed ${every}`);
    } else {
      setText(line, `Not refreshed: ${error.message}. Retrying…`);
    }
  }

  // ---------- Occupancy ----------
  function occupancyCell() {
    const text = h("span", { class: "occ-text" });
    const fill = h("i");
    const bar = h("div", { class: "bar", role: "img" }, fill);
    return { el: h("div", {}, text, bar), text, bar, fill };
  }
  function updateOccupancy(cell, limit) {
    const occ = limit.occupancy;
    const ratio = limit.limit > 0 ? Math.min(1, occ / limit.limit) : occ > 0 ? 1 : 0;
    cell.fill.style.width = `${(ratio * 100).toFixed(1)}%`;
    cell.bar.classList.toggle("warn", ratio >= 0.75 && ratio < 1);
    cell.bar.classList.toggle("full", ratio >= 1);
    const isRate = limit.slot_decay_per_second > 0;
    const held = `${intFmt.format(limit.active_slots)} / ${intFmt.format(limit.limit)}`;
    const text = isRate ? `${held} · ${exactFmt.format(occ)} exact` : held;
    setText(cell.text, limit.active ? text : `${text} (inactive)`);
    cell.bar.setAttribute("aria-label", `Occupancy ${held}${isRate ? `, exactly ${exactFmt.format(occ)}` : ""}`);
  }

  // ---------- Keyed rows: update in place so focus and hover survive refreshes ----------
  function syncRows(tbody, items, key, create, update) {
    const existing = new Map([...tbody.children].filter((r) => r.dataset.key).map((r) => [r.dataset.key, r]));
    const wanted = items.map((item) => {
      const k = String(key(item));
      let row = existing.get(k);
      if (!row) {
        row = create(item);
        row.dataset.key = k;
      }
      existing.delete(k);
      update(row, item);
      return row;
    });
    for (const row of existing.values()) row.remove();
    for (const row of [...tbody.children]) if (!row.dataset.key) row.remove();
    wanted.forEach((row, i) => {
      if (tbody.children[i] !== row) tbody.insertBefore(row, tbody.children[i] || null);
    });
  }

  // ---------- The list ----------
  const COLUMNS = [
    ["name", "Name", ""], [null, "Active", ""], ["limit", "Limit", "num"], ["fill", "Occupancy", ""],
    [null, "Decay / s", "num hide-narrow"], ["queued", "Queue", "num"], ["updated", "Updated", "hide-narrow"],
  ];

  function showList() {
    stopRefresh();
    document.title = "Concurrency · GCL";
    const L = state.list;
    const search = h("input", {
      id: "search", type: "search", value: L.q, placeholder: "Name contains…", autocomplete: "off",
    });
    let debounce;
    search.addEventListener("input", () => {
      clearTimeout(debounce);
      debounce = setTimeout(() => {
        L.q = search.value.trim();
        L.offset = 0;
        refreshNow();
      }, 200);
    });
    const head = h("tr", {}, COLUMNS.map(([sort, label, cls]) => {
      const th = h("th", { scope: "col", class: cls || null });
      if (sort) {
        th.dataset.sort = sort;
        th.append(h("button", { type: "button", onclick: () => sortBy(sort) }, label));
      } else th.textContent = label;
      return th;
    }), canAdmin() ? h("th", { scope: "col", class: "num" }, h("span", { class: "visually-hidden" }, "Actions")) : null);
    const tbody = h("tbody", { id: "limits-body" });
    const page = h("div", { class: "pager" },
      h("span", { id: "range", class: "muted" }),
      h("button", { type: "button", id: "prev", onclick: () => turn(-1) }, "← Previous"),
      h("button", { type: "button", id: "next", onclick: () => turn(1) }, "Next →"));
    main().replaceChildren(
      h("div", { class: "title-row" },
        h("h1", { text: "Concurrency limits" }),
        canAdmin() ? h("button", { type: "button", class: "primary", id: "new-limit", onclick: () => openLimitDialog(null) }, "New limit") : null),
      h("div", { class: "toolbar" },
        h("div", { class: "grow" }, h("label", { for: "search" }, "Search by name"), search),
        h("p", { class: "status-line", id: "status-line", role: "status" })),
      h("div", { class: "table-wrap" }, h("table", { id: "limits" },
        h("caption", { class: "visually-hidden" }, "Concurrency limits, live"), h("thead", {}, head), tbody)),
      h("p", { class: "empty", id: "no-limits", hidden: true }),
      page);
    const refresh = async () => {
      const params = new URLSearchParams({
        q: L.q, sort: L.sort, order: L.desc ? "desc" : "asc", offset: L.offset, limit: PAGE_SIZE,
      });
      const { data } = await api("GET", `/api/ui/limits?${params}`);
      if (data.total > 0 && L.offset >= data.total) {
        L.offset = Math.max(0, Math.floor((data.total - 1) / PAGE_SIZE) * PAGE_SIZE);
        return refresh();
      }
      renderList(data);
    };
    const refreshNow = () => startRefresh(refresh);
    state.refreshList = refreshNow;
    function sortBy(column) {
      if (L.sort === column) L.desc = !L.desc;
      else {
        L.sort = column;
        L.desc = column !== "name";
      }
      L.offset = 0;
      refreshNow();
    }
    function turn(direction) {
      L.offset = Math.max(0, L.offset + direction * PAGE_SIZE);
      refreshNow();
    }
    refreshNow();
  }

  function renderList(data) {
    const L = state.list;
    for (const th of document.querySelectorAll("#limits th[data-sort]")) {
      th.setAttribute("aria-sort", th.dataset.sort === L.sort ? (L.desc ? "descending" : "ascending") : "none");
    }
    syncRows(document.getElementById("limits-body"), data.items, (l) => l.id, createListRow, updateListRow);
    const none = document.getElementById("no-limits");
    none.hidden = data.total > 0;
    setText(none, L.q ? `No limit's name contains “${L.q}”.` : "No limits yet." + (canAdmin() ? " Create one with “New limit”." : ""));
    const first = data.total ? data.offset + 1 : 0;
    const last = data.offset + data.items.length;
    setText(document.getElementById("range"), `${intFmt.format(first)}–${intFmt.format(last)} of ${intFmt.format(data.total)}`);
    document.getElementById("prev").disabled = data.offset === 0;
    document.getElementById("next").disabled = last >= data.total;
  }

  function createListRow(limit) {
    const link = h("a", { href: limitUrl(limit.name), "data-nav": true });
    const active = h("input", { type: "checkbox", class: "switch", role: "switch", disabled: !canAdmin() });
    active.addEventListener("change", () => toggleActive(row.limit, active));
    const occ = occupancyCell();
    const cells = {
      link, active, occ,
      limit: h("td", { class: "num" }),
      decay: h("td", { class: "num hide-narrow" }),
      queue: h("td", { class: "num" }),
      updated: timeEl(null),
    };
    const row = h("tr", {},
      h("td", { class: "name" }, link),
      h("td", {}, active),
      cells.limit,
      h("td", { class: "occ" }, occ.el),
      cells.decay,
      cells.queue,
      h("td", { class: "hide-narrow" }, cells.updated),
      canAdmin() ? h("td", { class: "actions-cell" }, h("div", { class: "actions" },
        h("button", { type: "button", class: "small", "data-action": "edit", onclick: () => openLimitDialog(row.limit) }, "Edit"),
        h("button", { type: "button", class: "small", "data-action": "reset", onclick: () => confirmReset(row.limit) }, "Reset"),
        h("button", { type: "button", class: "small", "data-action": "delete", onclick: () => confirmDelete(row.limit) }, "Delete"))) : null);
    row.cells_ = cells;
    return row;
  }

  function updateListRow(row, limit) {
    row.limit = limit;
    const c = row.cells_;
    setText(c.link, limit.name);
    if (c.link.getAttribute("href") !== limitUrl(limit.name)) c.link.setAttribute("href", limitUrl(limit.name));
    c.active.checked = limit.active;
    c.active.setAttribute("aria-label", `Active: ${limit.name}`);
    setText(c.limit, intFmt.format(limit.limit));
    updateOccupancy(c.occ, limit);
    setText(c.decay, limit.slot_decay_per_second ? num(limit.slot_decay_per_second) : "—");
    setText(c.queue, limit.queued ? `${intFmt.format(limit.queued)} (${plural(limit.queued_slots, "slot")})` : "0");
    updateTime(c.updated, limit.updated);
    for (const button of row.querySelectorAll("[data-action]")) {
      button.setAttribute("aria-label", `${button.textContent} ${limit.name}`);
    }
  }

  // ---------- One limit ----------
  const limitUrl = (name) => `/ui/limits/${encodeURIComponent(name)}`;

  function showLimit(name) {
    stopRefresh();
    document.title = `${name} · Concurrency · GCL`;
    const view = { id: null, name };
    const settings = h("dl", { class: "settings", id: "settings" });
    const occ = occupancyCell();
    occ.bar.classList.add("big");
    const leasesBody = h("tbody", { id: "leases-body" });
    const waitersBody = h("tbody", { id: "waiters-body" });
    const adminButtons = canAdmin()
      ? h("div", { class: "actions" },
        h("button", { type: "button", id: "edit-limit", onclick: () => openLimitDialog(view.limit) }, "Edit"),
        h("button", { type: "button", id: "toggle-limit", onclick: () => toggleActive(view.limit) }, "Disable"),
        h("button", { type: "button", id: "reset-limit", onclick: () => confirmReset(view.limit) }, "Reset"),
        h("button", { type: "button", id: "delete-limit", class: "danger", onclick: () => confirmDelete(view.limit) }, "Delete"))
      : null;
    main().replaceChildren(
      h("p", { class: "crumbs" }, h("a", { href: "/", "data-nav": true }, "Limits"), " / "),
      h("div", { class: "title-row" }, h("h1", { id: "limit-name", text: name }), adminButtons),
      h("p", { class: "status-line", id: "status-line", role: "status" }),
      h("div", { class: "grid" },
        h("section", { class: "panel", "aria-labelledby": "settings-h" },
          h("h2", { id: "settings-h" }, "Settings"), settings),
        h("section", { class: "panel", "aria-labelledby": "occ-h" },
          h("h2", { id: "occ-h" }, "Occupancy"), occ.el,
          h("p", { class: "muted", id: "occ-note" }))),
      h("section", { class: "panel", "aria-labelledby": "leases-h" },
        h("h2", { id: "leases-h" }, "Leases"),
        h("div", { class: "table-wrap" }, h("table", { id: "leases" },
          h("thead", {}, h("tr", {},
            ["Holder", "Slots", "Since", "Expires", "Fencing token", "Names"].map((t, i) =>
              h("th", { scope: "col", class: i === 1 || i === 4 ? "num" : i === 5 ? "hide-narrow" : null }, t)),
            canAdmin() ? h("th", { scope: "col" }, h("span", { class: "visually-hidden" }, "Actions")) : null)),
          leasesBody)),
        h("p", { class: "empty", id: "no-leases" }, "No live leases.")),
      h("section", { class: "panel", "aria-labelledby": "queue-h" },
        h("h2", { id: "queue-h" }, "Waiting queue"),
        h("div", { class: "table-wrap" }, h("table", { id: "waiters" },
          h("thead", {}, h("tr", {}, ["#", "Slots", "Holder", "Waiting since", "Connected"].map((t, i) => h("th", { scope: "col", class: i < 2 ? "num" : null }, t)))),
          waitersBody)),
        h("p", { class: "empty", id: "no-waiters" }, "Nobody is waiting.")),
      h("section", { class: "panel chart", id: "rate-panel", "aria-labelledby": "rate-h", hidden: true },
        h("h2", { id: "rate-h" }, "Achieved rate"), h("div", { id: "rate-chart" })),
      h("section", { class: "panel", id: "activity-panel", "aria-labelledby": "activity-h", hidden: true },
        h("h2", { id: "activity-h" }, "Recent activity"), h("ol", { class: "activity", id: "activity" }),
        h("p", { class: "empty", id: "no-activity", hidden: true }, "Nothing recorded yet.")));
    const refresh = async () => {
      try {
        const { data } = await api("GET", `/api/ui/limits/${encodeURIComponent(view.id || view.name)}`);
        view.id = data.limit.id;
        renderLimit(view, data, occ);
      } catch (error) {
        if (error.status === 404) {
          main().replaceChildren(h("h1", {}, "Not found"),
            h("p", {}, `There is no limit named “${view.name}” (any more).`),
            h("p", {}, h("a", { href: "/", "data-nav": true }, "Back to the limits")));
        }
        throw error;
      }
    };
    refresh.stopOn404 = true;
    state.refreshLimit = () => startRefresh(refresh);
    startRefresh(refresh);
  }

  function renderLimit(view, data, occ) {
    const limit = data.limit;
    view.limit = limit;
    if (limit.name !== view.name) {
      view.name = limit.name;
      history.replaceState(null, "", limitUrl(limit.name));
      document.title = `${limit.name} · Concurrency · GCL`;
    }
    setText(document.getElementById("limit-name"), limit.name);
    const isRate = limit.slot_decay_per_second > 0;
    const rows = [
      ["Kind", isRate ? "Rate limit" : "Concurrency limit"],
      ["Active", limit.active ? "Yes" : "No (admits everyone, occupies nothing)"],
      ["Slots (limit)", intFmt.format(limit.limit)],
      ["Slot decay / s", isRate ? num(limit.slot_decay_per_second) : "0 (slots held until released)"],
      ["Denied slots", intFmt.format(limit.denied_slots)],
      ["Avg. occupancy", `${decFmt.format(limit.avg_slot_occupancy_seconds)} s`],
      ["Created", limit.created],
      ["Updated", limit.updated],
      ["Id", limit.id],
    ];
    const dl = document.getElementById("settings");
    if (!dl.children.length) {
      for (const [label] of rows) dl.append(h("dt", {}, label), h("dd", {}, label === "Created" || label === "Updated" ? timeEl(null) : ""));
    }
    rows.forEach(([label, value], i) => {
      const dd = dl.children[2 * i + 1];
      if (label === "Created" || label === "Updated") updateTime(dd.firstChild, value);
      else setText(dd, value);
    });
    updateOccupancy(occ, limit);
    setText(document.getElementById("occ-note"), `${plural(data.leases.length, "lease")}; ` +
      (limit.queued ? `${plural(limit.queued, "request")} waiting for ${plural(limit.queued_slots, "slot")}.` : "nobody waiting."));
    const toggle = document.getElementById("toggle-limit");
    if (toggle) setText(toggle, limit.active ? "Disable" : "Enable");

    syncRows(document.getElementById("leases-body"), data.leases, (l) => l.lease_id || `t${l.fencing_token}`,
      createLeaseRow, updateLeaseRow);
    document.getElementById("no-leases").hidden = data.leases.length > 0;
    document.getElementById("leases").parentElement.hidden = !data.leases.length;
    syncRows(document.getElementById("waiters-body"), data.waiters, (w) => `${w.waiting_since}|${w.slots}|${JSON.stringify(w.holder)}`,
      () => h("tr", {}, h("td", { class: "num" }), h("td", { class: "num" }), h("td"), h("td", {}, timeEl(null)), h("td")),
      (row, w) => {
        setText(row.children[0], String(w.position));
        setText(row.children[1], intFmt.format(w.slots));
        setText(row.children[2], holderText(w.holder));
        updateTime(row.children[3].firstChild, w.waiting_since);
        setText(row.children[4], w.attached ? "yes" : "re-asking");
      });
    document.getElementById("no-waiters").hidden = data.waiters.length > 0;
    document.getElementById("waiters").parentElement.hidden = !data.waiters.length;
    renderActivity(data.activity);
    renderRate(limit, data.rate);
  }

  function createLeaseRow(lease) {
    const row = h("tr", {},
      h("td"), h("td", { class: "num" }), h("td", {}, timeEl(null)), h("td", {}, timeEl(null)),
      h("td", { class: "num" }), h("td", { class: "hide-narrow" }),
      canAdmin() ? h("td", {}, h("button", {
        type: "button", class: "small", "data-action": "revoke", onclick: () => confirmRevoke(row.lease),
      }, "Revoke")) : null);
    return row;
  }
  function updateLeaseRow(row, lease) {
    row.lease = lease;
    setText(row.children[0], holderText(lease.holder));
    setText(row.children[1], intFmt.format(lease.slots));
    updateTime(row.children[2].firstChild, lease.acquired);
    updateTime(row.children[3].firstChild, lease.expires);
    setText(row.children[4], String(lease.fencing_token));
    setText(row.children[5], lease.names.join(", "));
    const revoke = row.querySelector("[data-action=revoke]");
    if (revoke) revoke.setAttribute("aria-label", `Revoke lease of ${holderText(lease.holder)}, token ${lease.fencing_token}`);
  }

  function renderActivity(entries) {
    const panel = document.getElementById("activity-panel");
    if (!entries) return;
    panel.hidden = false;
    const list = document.getElementById("activity");
    syncRows(list, entries, (e) => e.id, () => h("li", {}, h("span", { class: "kind" }), timeEl(null), h("span", { class: "muted" })),
      (li, e) => {
        setText(li.children[0], e.kind);
        updateTime(li.children[1], e.at);
        const parts = [];
        const d = e.detail || {};
        if (e.slots) parts.push(plural(e.slots, "slot"));
        if (d.fencing_token !== undefined) parts.push(`token ${d.fencing_token}`);
        if (d.wait_seconds) parts.push(`waited ${decFmt.format(d.wait_seconds)} s`);
        if (d.before && d.after) {
          for (const [k, v] of Object.entries(d.after)) {
            if (JSON.stringify(d.before[k]) !== JSON.stringify(v)) parts.push(`${k}: ${d.before[k]} → ${v}`);
          }
        }
        if (e.actor && e.actor !== "anonymous") parts.push(`by ${e.actor}`);
        setText(li.children[2], parts.join(" · "));
      });
    document.getElementById("no-activity").hidden = entries.length > 0;
  }

  // A small SVG chart: slots admitted per second in each bucket, against the configured decay rate.
  function renderRate(limit, rate) {
    const panel = document.getElementById("rate-panel");
    if (!rate || !(limit.slot_decay_per_second > 0)) {
      panel.hidden = true;
      return;
    }
    panel.hidden = false;
    const W = 600, H = 160, P = 28;
    const buckets = rate.buckets;
    const top = Math.max(limit.slot_decay_per_second * 1.25, ...buckets.map((b) => b.rate), 1e-9);
    const x = (i) => P + (i * (W - 2 * P)) / Math.max(1, buckets.length - 1);
    const y = (v) => H - P - (v / top) * (H - 2 * P);
    const ns = "http://www.w3.org/2000/svg";
    const svg = (tag, attrs) => {
      const el = document.createElementNS(ns, tag);
      for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
      return el;
    };
    const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img" });
    const last = buckets.length ? buckets[buckets.length - 1].rate : 0;
    const label = `Admitted ${decFmt.format(last)} per second in the last ${rate.bucket_seconds} s; configured ${num(limit.slot_decay_per_second)} per second.`;
    root.setAttribute("aria-label", label);
    root.append(svg("line", { class: "axis", x1: P, y1: H - P, x2: W - P, y2: H - P }));
    root.append(svg("line", { class: "configured", x1: P, x2: W - P, y1: y(limit.slot_decay_per_second), y2: y(limit.slot_decay_per_second) }));
    if (buckets.length) {
      root.append(svg("polyline", { class: "achieved", points: buckets.map((b, i) => `${x(i).toFixed(1)},${y(b.rate).toFixed(1)}`).join(" ") }));
    }
    const t1 = svg("text", { x: P, y: H - 8 });
    const span = buckets.length * rate.bucket_seconds;
    t1.textContent = span >= 120 ? `${Math.round(span / 60)} min ago` : `${span} s ago`;
    const t2 = svg("text", { x: W - P, y: H - 8, "text-anchor": "end" });
    t2.textContent = "now";
    const t3 = svg("text", { x: 2, y: y(top) + 10 });
    t3.textContent = `${decFmt.format(top)}/s`;
    root.append(t1, t2, t3);
    document.getElementById("rate-chart").replaceChildren(root,
      h("p", { class: "legend" }, h("span", {}, h("span", { class: "sw" }), "achieved (slots admitted per second)"),
        h("span", {}, h("span", { class: "sw cfg" }), `configured ${num(limit.slot_decay_per_second)}/s`)),
      h("p", { class: "muted" }, label));
  }

  // ---------- Changes ----------
  function refreshCurrent() {
    if (location.pathname.startsWith("/ui/limits/")) state.refreshLimit && state.refreshLimit();
    else state.refreshList && state.refreshList();
  }

  async function toggleActive(limit, checkbox) {
    const active = !limit.active;
    try {
      await api("PATCH", limitPath(limit.id), { active });
      announce(`${limit.name} ${active ? "enabled" : "disabled"}.`);
    } catch (error) {
      if (checkbox) checkbox.checked = limit.active;
      announce(`Could not change ${limit.name}: ${error.message}`);
      alertError(error);
    }
    refreshCurrent();
  }
  function alertError(error) {
    const line = document.getElementById("status-line");
    if (line) {
      line.classList.add("stale");
      setText(line, error.message);
    }
  }

  // Create or edit. The API validates; its messages are shown beside the fields they belong to.
  function openLimitDialog(limit) {
    const dialog = document.getElementById("limit-dialog");
    const form = document.getElementById("limit-form");
    const fields = { name: "f-name", limit: "f-limit", slot_decay_per_second: "f-decay", active: "f-active" };
    const el = (name) => document.getElementById(fields[name]);
    setText(document.getElementById("limit-dialog-title"), limit ? `Edit ${limit.name}` : "New limit");
    setText(document.getElementById("limit-submit"), limit ? "Save" : "Create");
    el("name").value = limit ? limit.name : "";
    el("limit").value = limit ? limit.limit : "10";
    el("slot_decay_per_second").value = limit ? limit.slot_decay_per_second : "0";
    el("active").checked = limit ? limit.active : true;
    const formError = document.getElementById("limit-form-error");
    const clear = () => {
      formError.hidden = true;
      for (const name of Object.keys(fields)) {
        el(name).removeAttribute("aria-invalid");
        setText(document.getElementById(`${fields[name]}-error`), "");
      }
    };
    clear();
    const asNumber = (value) => (value.trim() === "" ? value : Number(value));
    form.onsubmit = async (event) => {
      event.preventDefault();
      clear();
      const body = {
        name: el("name").value,
        limit: asNumber(el("limit").value),
        slot_decay_per_second: asNumber(el("slot_decay_per_second").value),
        active: el("active").checked,
      };
      if (limit) for (const k of Object.keys(body)) if (body[k] === limit[k]) delete body[k];
      try {
        if (!limit) await api("POST", `${LIMITS}/`, body);
        else if (Object.keys(body).length) await api("PATCH", limitPath(limit.id), body, { "If-Match": limit.etag || "*" });
        dialog.close();
        announce(limit ? `${body.name || limit.name} saved.` : `${body.name} created.`);
        if (limit && body.name && location.pathname.startsWith("/ui/limits/")) navigate(limitUrl(body.name), true);
        else refreshCurrent();
      } catch (error) {
        if (error.status === 401) return dialog.close();
        showFormErrors(error, fields, formError);
      }
    };
    dialog.showModal();
    el("name").focus();
  }

  function showFormErrors(error, fields, formError) {
    const perField = (error.body.errors && error.body.errors.json) || {};
    let first = null;
    for (const [name, messages] of Object.entries(perField)) {
      const id = fields[name];
      if (!id) continue;
      document.getElementById(id).setAttribute("aria-invalid", "true");
      setText(document.getElementById(`${id}-error`), [].concat(messages).join(" "));
      first = first || document.getElementById(id);
    }
    if (error.status === 409) {
      document.getElementById(fields.name).setAttribute("aria-invalid", "true");
      setText(document.getElementById(`${fields.name}-error`), error.message);
      first = document.getElementById(fields.name);
    } else if (!first) {
      const hint = error.status === 412 ? " Someone changed this limit meanwhile: close and open the dialog again." : "";
      formError.textContent = error.message + hint;
      formError.hidden = false;
    }
    if (first) first.focus();
  }

  function confirmAction({ title, text, button, run, after }) {
    const dialog = document.getElementById("confirm-dialog");
    setText(document.getElementById("confirm-title"), title);
    setText(document.getElementById("confirm-text"), text);
    setText(document.getElementById("confirm-submit"), button);
    const error = document.getElementById("confirm-error");
    error.hidden = true;
    document.getElementById("confirm-form").onsubmit = async (event) => {
      event.preventDefault();
      try {
        await run();
        dialog.close();
        if (after) after();
        refreshCurrent();
      } catch (e) {
        if (e.status === 401) return dialog.close();
        error.textContent = e.message;
        error.hidden = false;
      }
    };
    dialog.showModal();
    document.querySelector("#confirm-dialog [data-close]").focus();
  }
  function confirmReset(limit) {
    confirmAction({
      title: `Reset ${limit.name}?`,
      text: "Every lease on this limit is revoked at once: its holders lose their slots, and their next renewal is told the lease is gone (strict holders stop their work). Rate-limit occupancy and denied slots go back to 0. Waiting requests are then admitted in order.",
      button: "Reset limit",
      run: async () => {
        await api("POST", `${limitPath(limit.id)}/reset`);
        announce(`${limit.name} reset.`);
      },
    });
  }
  function confirmDelete(limit) {
    confirmAction({
      title: `Delete ${limit.name}?`,
      text: "The limit is deleted and its leases revoked. Processes that acquire it afterwards are told it does not exist (they warn, or fail when strict). This cannot be undone.",
      button: "Delete limit",
      run: async () => {
        await api("DELETE", limitPath(limit.id));
        announce(`${limit.name} deleted.`);
        if (location.pathname.startsWith("/ui/limits/")) navigate("/", false);
      },
      after: () => {
        const search = document.getElementById("search"); // the row and its button are gone: focus stays usable
        if (search) search.focus();
      },
    });
  }
  function confirmRevoke(lease) {
    confirmAction({
      title: "Revoke this lease?",
      text: `${holderText(lease.holder)} loses ${plural(lease.slots, "slot")} on ${lease.names.join(", ")} now. Its next renewal is told the lease is gone (a strict holder stops its work; others warn). The fencing token ${lease.fencing_token} stays spent.`,
      button: "Revoke lease",
      run: async () => {
        await api("DELETE", `${LIMITS}/leases/${encodeURIComponent(lease.lease_id)}`);
        announce("Lease revoked.");
      },
    });
  }

  // ---------- Routing ----------
  function navigate(url, replace) {
    if (replace) history.replaceState(null, "", url);
    else history.pushState(null, "", url);
    route();
  }
  async function route() {
    stopRefresh();
    if (state.keysRequired && !state.scope) return showKeyForm();
    const match = location.pathname.match(/^\/ui\/limits\/([^/]+)$/);
    if (match) showLimit(decodeURIComponent(match[1]));
    else showList();
  }
  document.addEventListener("click", (event) => {
    const a = event.target.closest("a[data-nav]");
    if (!a || event.ctrlKey || event.metaKey || event.shiftKey || event.button !== 0) return;
    event.preventDefault();
    navigate(a.getAttribute("href"), false);
    main().focus();
  });
  window.addEventListener("popstate", route);
  for (const button of document.querySelectorAll("dialog [data-close]")) {
    button.addEventListener("click", () => button.closest("dialog").close());
  }
  document.getElementById("forget-key").addEventListener("click", () => {
    sessionStorage.removeItem(KEY);
    state.scope = null;
    showKeyForm("Key forgotten for this tab.");
  });

  (async () => {
    try {
      const session = await loadSession();
      if (session.keys_required && !session.scope) {
        if (sessionStorage.getItem(KEY)) {
          sessionStorage.removeItem(KEY);
          return showKeyForm("That key was not accepted by the server. Check it and try again.");
        }
        return showKeyForm();
      }
      route();
    } catch (error) {
      main().replaceChildren(h("p", { class: "form-error" }, `The server did not answer: ${error.message}`));
    }
  })();
})();
