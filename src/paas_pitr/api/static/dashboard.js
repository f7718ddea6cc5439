"use strict";
// The dashboard is a thin client of the public API: same token, same envelope, no secrets of
// its own. Everything user-supplied is rendered with textContent, never as markup, and
// connection strings are masked (secrets.js) until the user reveals one. The timeline and
// the instant helpers are in timeline.js.
const $ = (selector, root = document) => root.querySelector(selector);
// Parts of a template are found by data-role, never by class: the timeline's SVG marks
// carry classes too ("drill", "restore", "backup"), and a class lookup would find those.
const role = (name, root) => root.querySelector(`[data-role="${name}"]`);
const tokenInput = $("#token");
const appInput = $("#app");
const REFRESH_MS = 5000;
// While a restore is under way its phase is polled faster.
const REFRESH_BUSY_MS = 2000;

// A shared link `/dashboard#token=...&app=...` signs in and opens that app. The fragment is
// never sent to any server (browsers keep it local), the token goes only into the API's
// Authorization header, and the fragment is cleared from the address bar (and history) at
// once. The token is kept in sessionStorage: gone when the tab closes.
function applyFragment() {
  const fragment = new URLSearchParams(location.hash.slice(1));
  if (fragment.has("token") || fragment.has("app")) {
    if (fragment.get("token")) sessionStorage.setItem("paas-pitr-token", fragment.get("token"));
    if (fragment.get("app")) sessionStorage.setItem("paas-pitr-app", fragment.get("app"));
    history.replaceState(null, "", location.pathname);
  }
  tokenInput.value = sessionStorage.getItem("paas-pitr-token") || "";
  appInput.value = sessionStorage.getItem("paas-pitr-app") || appInput.value;
}
applyFragment();

// A user-typed id goes into a URL path as one segment, never as more path or a query.
const path = encodeURIComponent;

// The status line: the message, and the hint of an error on its own line.
function say(text, isError = false, hint = null) {
  const message = $("#message");
  message.textContent = text;
  message.className = isError ? "error" : "";
  const hintLine = $("#hint");
  hintLine.textContent = hint ? `Hint: ${hint}` : "";
  hintLine.hidden = !hint;
}

class ApiError extends Error {
  constructor(status, error) {
    const window_ = error.details && error.details.window;
    const ranges = window_ && window_.ranges && window_.ranges.length
      ? window_.ranges.map((r) => `${r.earliest} .. ${r.latest}`).join(", ")
      : window_ && window_.state;
    const extra = window_ ? ` (restorable: ${ranges})` : "";
    super(`${error.code || status}: ${error.message || "request failed"}${extra}`);
    this.status = status;
    this.code = error.code;
    this.hint = (error.details && error.details.hint) || error.hint || null;
  }
}

async function api(method, path, body) {
  const options = { method, headers: { Authorization: `Bearer ${tokenInput.value.trim()}` } };
  if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const response = await fetch(`/v1${path}`, options);
  const payload = response.status === 204 ? {} : await response.json();
  if (!response.ok) throw new ApiError(response.status, payload.error || {});
  return payload.data;
}

function report(error) {
  say(error.message, true, error.hint || null);
}

// Restores whose connection string the user chose to see; kept across refreshes.
const revealed = new Set();

function button(label, onClick) {
  const node = document.createElement("button");
  node.type = "button";
  node.textContent = label;
  node.addEventListener("click", onClick);
  return node;
}

function cell(row, text, status) {
  const td = document.createElement("td");
  td.textContent = text == null ? "" : String(text);
  if (status) td.className = `status-${status}`;
  row.appendChild(td);
  return td;
}

// The connection of a restore: masked, with Reveal/Hide and Copy (the clear text goes to the
// clipboard without being shown). The Kubernetes engine gives no password: it names the
// Secret that holds it.
function connectionCell(row, restore) {
  const td = cell(row, "");
  const connection = restore.connection;
  if (!connection) return td;
  const code = document.createElement("code");
  td.appendChild(code);
  if (!connection.uri) {
    code.textContent = `${connection.user}@${connection.host}:${connection.port}/${connection.database}` +
      (connection.secret ? ` (password in Secret ${connection.secret})` : "");
    return td;
  }
  const uri = connection.uri;
  const show = () => {
    const clear = revealed.has(restore.restore_id);
    code.textContent = clear ? uri : maskConnection(uri);
    toggle.textContent = clear ? "Hide" : "Reveal";
  };
  const toggle = button("Reveal", () => {
    if (revealed.has(restore.restore_id)) revealed.delete(restore.restore_id);
    else revealed.add(restore.restore_id);
    show();
  });
  toggle.className = "reveal";
  const copy = button("Copy", async () => {
    try {
      await navigator.clipboard.writeText(uri);
      say(`Connection string of restore ${restore.restore_id.slice(0, 8)} copied`);
    } catch (error) {
      say(`Could not copy: ${error.message}`, true);
    }
  });
  copy.className = "copy";
  td.append(" ", toggle, " ", copy);
  show();
  return td;
}

// --- restore progress ---------------------------------------------------------------------

const PHASES = {
  restore_triggered: "restore triggered: waiting for the new cluster to start",
  recovering: "recovering: restoring the base backup and replaying WAL",
  ready: "ready",
  verifying: "verifying: checking the restored cluster before the switch",
  switching: "switching: the addon's connection moves to the restored data",
  switched: "switched: the addon serves the restored data (undo possible)",
  undoing: "undoing: switching the addon back",
  undone: "undone: the addon serves its data from before the switch",
  failed: "failed",
};
// Where a restore ends: ready (a new cluster), switched or undone (in place), failed. Any
// other status, whatever its name, is still under way and keeps the page polling.
const FINISHED = new Set(["ready", "switched", "undone", "failed"]);
const underWay = (status) => !FINISHED.has(status);

function elapsed(sinceMs) {
  const seconds = Math.max(0, Math.round((Date.now() - sinceMs) / 1000));
  if (seconds < 120) return `${seconds}s`;
  const minutes = Math.floor(seconds / 60);
  return minutes < 120 ? `${minutes}m ${seconds % 60}s` : `${Math.floor(minutes / 60)}h ${minutes % 60}m`;
}

// Elements with data-since (ms since the epoch) show the time elapsed since, every second.
function tickElapsed() {
  for (const node of document.querySelectorAll("[data-since]")) {
    node.textContent = `${node.dataset.phase} (${elapsed(Number(node.dataset.since))})`;
  }
}

// A restore's target as asked. Before an event, its instant is the mistake's own commit,
// which the restore excludes: say so rather than show the instant alone.
function targetText(restore) {
  const instant = restore.restores_to || restore.timestamp || "";
  const asked = restore.recovery_target;
  if (!asked || !asked.kind || asked.kind === "timestamp") return instant;
  if (asked.kind === "before_event") {
    return `before event ${asked.value}` + (instant ? ` (committed ${instant}, excluded)` : "");
  }
  const label = { xid: "xid", lsn: "LSN", restore_point: "restore point", latest: "latest" };
  const what = asked.kind === "latest" ? "latest" : `${label[asked.kind] || asked.kind} ${asked.value}`;
  return what + (instant ? ` (${instant})` : "");
}

function restoreRows(tbody, restores) {
  const rows = [];
  for (const restore of restores) {
    const row = document.createElement("tr");
    row.className = "restore-row";
    row.dataset.restore = restore.restore_id;
    cell(row, restore.restore_id.slice(0, 8));
    cell(row, targetText(restore)).classList.add("instant");
    const phase = cell(row, PHASES[restore.status] || restore.status, restore.status);
    phase.classList.add("phase");
    const created = Date.parse(restore.created_at || "");
    if (underWay(restore.status) && !Number.isNaN(created)) {
      phase.dataset.phase = phase.textContent;
      phase.dataset.since = String(created);
    }
    cell(row, restore.cluster_name);
    connectionCell(row, restore);
    rows.push(row);
    if (restore.reason || restore.hint) {
      const detail = document.createElement("tr");
      detail.className = "detail";
      const td = cell(detail, "");
      td.colSpan = 5;
      if (restore.reason) {
        const reason = document.createElement("div");
        reason.className = `reason status-${restore.status}`;
        reason.textContent = `${restore.status === "failed" ? "Failed" : "Now"}: ${restore.reason}`;
        td.appendChild(reason);
      }
      if (restore.hint) {
        const hint = document.createElement("div");
        hint.className = "hint";
        hint.textContent = `Hint: ${restore.hint}`;
        td.appendChild(hint);
      }
      rows.push(detail);
    }
  }
  tbody.replaceChildren(...rows);
}

// --- one addon's card ---------------------------------------------------------------------

// Cards are kept across refreshes: a refresh updates what the server says (timeline,
// tables) and never touches what the user is typing or has picked.
const cards = new Map();

function targetFeedback(card) {
  const text = card.target.value.trim();
  const feedback = role("target-feedback", card.node);
  feedback.className = "target-feedback";
  if (!text) {
    feedback.textContent = "";
    return;
  }
  const micros = parseInstant(text);
  if (micros === null) {
    feedback.textContent = "Not an instant: type UTC as 2026-05-04T15:30:00.123456Z";
    feedback.classList.add("status-failed");
    return;
  }
  const range = rangeAt(card.model, micros);
  feedback.textContent = range
    ? `Restorable (range ${formatInstant(range.earliest)} .. ${formatInstant(range.latest)})`
    : "Outside the restorable ranges: the server will refuse it";
  feedback.classList.add(range ? "status-ready" : "status-failed");
}

function createCard(app, addon) {
  const node = $("#addon-template").content.firstElementChild.cloneNode(true);
  node.dataset.addon = addon.addon_id;
  // events: what the last scan of this addon's archive found (events.js), drawn on the
  // timeline until the next scan.
  const card = { app, id: addon.addon_id, node, model: null, tier: addon.tier, events: [] };
  card.target = role("target", node);
  card.points = role("points", node);
  card.target.addEventListener("input", () => targetFeedback(card));
  const form = role("restore", node);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const timestamp = card.tier === "daily" ? card.points.value : card.target.value.trim();
    if (!timestamp) {
      say(card.tier === "daily" ? "Pick a base backup to restore" : "Pick an instant: click the timeline or type one", true);
      return;
    }
    try {
      const restore = await api("POST", `/apps/${path(app)}/addons/${path(card.id)}/restore`, { timestamp });
      say(`Restore ${restore.restore_id} triggered: new cluster ${restore.cluster_name}` +
        (restore.message ? ` - ${restore.message}` : ""));
      card.target.value = "";
      targetFeedback(card);
      await load();
    } catch (error) {
      report(error);
    }
  });
  role("backup-now", node).addEventListener("click", async () => {
    try {
      const backup = await api("POST", `/apps/${path(app)}/addons/${path(card.id)}/backups`);
      say(`Backup ${backup.name} requested`);
      await load();
    } catch (error) {
      report(error);
    }
  });
  role("drill-now", node).addEventListener("click", async () => {
    try {
      const started = await api("POST", `/apps/${path(app)}/addons/${path(card.id)}/drills`);
      say(`Restore drill ${started.drill_id.slice(0, 8)} started: restoring into ${started.cluster_name}`);
      await load();
    } catch (error) {
      report(error);
    }
  });
  role("find-events", node).addEventListener("click", () => findWindowEvents(card));
  role("show-incarnations", node).addEventListener("click", () => showIncarnations(app, card.id, role("incarnations", node)));
  cards.set(addon.addon_id, card);
  return card;
}

function pick(card, micros, point) {
  if (card.tier === "daily") {
    if (point) card.points.value = formatInstant(point.at);
    return;
  }
  card.target.value = formatInstant(micros);
  targetFeedback(card);
}

function updateCard(card, addon, listing, restores, drills) {
  const node = card.node;
  card.tier = addon.tier;
  role("name", node).textContent = addon.addon_id;
  role("plan", node).textContent = `${addon.plan} (${addon.tier})`;
  const state = role("state", node);
  state.textContent = addon.ready ? "ready" : addon.phase || "starting";
  state.className = `state status-${addon.ready ? "ready" : "pending"}`;
  const hasBackups = addon.tier !== "none";
  for (const name of ["timeline-box", "backups", "restore", "restores", "wal", "drill"]) {
    role(name, node).hidden = !hasBackups;
  }
  if (!hasBackups) {
    role("window", node).textContent = "The free plan has no backups: nothing to restore. " +
      "Change the plan to standard or pro (PATCH .../addons/{addon} {\"plan\": \"pro\"}).";
    return;
  }
  const w = listing.window;
  card.model = timelineModel(listing, restores, Date.now() * 1000, drills, card.events);
  const box = role("timeline-box", node);
  // Events (a WAL archive to scan, a transaction to stop before) are for the pro plan only.
  const pitr = addon.tier === "pitr";
  role("events-line", node).hidden = !pitr;
  role("events-legend", node).hidden = !pitr;
  if (card.model) {
    renderTimeline(role("timeline-graph", box), card.model, (micros, point) => pick(card, micros, point),
      { onEvent: (mark) => restoreBefore(card.app, card.id, mark) });
  } else {
    role("timeline-graph", box).replaceChildren();
  }
  role("window", node).textContent = `Recoverability window: ${w.state}${w.message ? ` - ${w.message}` : ""}`;
  const wal = listing.wal_archive;
  const walLine = role("wal", node);
  walLine.textContent = `WAL archive: ${wal.status}${wal.reason ? ` (${wal.reason})` : ""}`;
  walLine.className = `wal status-${wal.status}`;
  if (wal.hint) {
    const hint = document.createElement("div");
    hint.className = "hint";
    hint.textContent = `Hint: ${wal.hint}`;
    walLine.appendChild(hint);
  }
  // The newest finished restore drill: proof the backups restore, and how long it took.
  const drill = addon.last_drill;
  const drillLine = role("drill", node);
  drillLine.textContent = drill
    ? `Last restore drill: ${drill.status} at ${drill.finished_at}` +
      (drill.rto_seconds == null ? "" : `, RTO ${drill.rto_seconds.toFixed(1)} s`) +
      (drill.failing_check ? ` (failed at ${drill.failing_check})` : "")
    : "No restore drill yet";
  drillLine.className = `drill status-${drill ? drill.status : "pending"}`;
  const daily = addon.tier === "daily";
  role("pitr-target", node).hidden = daily;
  role("point-target", node).hidden = !daily;
  if (daily) {
    const chosen = card.points.value;
    const options = (w.restore_points || []).map((p) => {
      const option = document.createElement("option");
      option.value = p.at;
      option.textContent = `backup ${p.backup_id}: the data as of ${p.at}`;
      return option;
    });
    const empty = document.createElement("option");
    empty.value = "";
    empty.textContent = options.length ? "Pick a base backup" : "No completed base backup yet";
    card.points.replaceChildren(empty, ...options);
    card.points.value = options.some((o) => o.value === chosen) ? chosen : "";
  }
  targetFeedback(card);
  const tbody = $("tbody", role("backups", node));
  tbody.replaceChildren(...listing.items.map((item) => {
    const row = document.createElement("tr");
    cell(row, item.backup_id || item.name);
    cell(row, item.status, item.status);
    cell(row, item.started_at).classList.add("instant");
    cell(row, item.stopped_at).classList.add("instant");
    const problem = cell(row, item.error || "");
    if (item.hint) {
      const hint = document.createElement("div");
      hint.className = "hint";
      hint.textContent = `Hint: ${item.hint}`;
      problem.appendChild(hint);
    }
    return row;
  }));
  role("backups", node).hidden = !listing.items.length;
  role("no-backups", node).hidden = listing.items.length > 0;
  restoreRows($("tbody", role("restores", node)), restores);
  role("restores", node).hidden = !restores.length;
}

// --- deleted addons: their archives (incarnations) ----------------------------------------

async function showIncarnations(app, addonId, container) {
  try {
    const incarnations = await api("GET", `/apps/${path(app)}/addons/${path(addonId)}/incarnations`);
    const nodes = incarnations.map((inc) => {
      const node = $("#incarnation-template").content.firstElementChild.cloneNode(true);
      role("server", node).textContent = inc.server_name;
      role("when", node).textContent = inc.current
        ? "live (archiving now)"
        : `deleted ${inc.deleted_at || "(time unknown)"}, kept until ${inc.retained_until || "(unknown)"}`;
      const lines = [`plan ${inc.plan || "?"}, ${inc.base_backups.length} base backup(s)`];
      for (const r of inc.ranges || []) lines.push(`restorable ${r.earliest} .. ${r.latest}`);
      if (!(inc.ranges || []).length && inc.earliest) lines.push(`base backups from ${inc.earliest} to ${inc.latest}`);
      role("ranges", node).textContent = lines.join("\n");
      const form = $("form", node);
      const input = $("input", form);
      input.value = inc.latest || "";
      form.addEventListener("submit", async (event) => {
        event.preventDefault();
        try {
          const restore = await api("POST", `/apps/${path(app)}/addons/${path(addonId)}/restore`,
            { timestamp: input.value.trim(), incarnation: inc.server_name });
          say(`Restore ${restore.restore_id} of incarnation ${inc.server_name} triggered: new cluster ${restore.cluster_name}`);
        } catch (error) {
          report(error);
        }
      });
      return node;
    });
    if (!nodes.length) {
      const empty = document.createElement("p");
      empty.textContent = `No archive of ${addonId} in the bucket.`;
      nodes.push(empty);
    }
    container.replaceChildren(...nodes);
  } catch (error) {
    report(error);
  }
}

// --- the page -----------------------------------------------------------------------------

function showEmpty(kind, app) {
  const empty = $("#empty");
  empty.hidden = !kind;
  for (const node of empty.querySelectorAll("[data-when]")) node.hidden = node.dataset.when !== kind;
  for (const node of empty.querySelectorAll(".app-name")) node.textContent = app || "APP";
}

let busy = false;
// Loads overlap when the server is slow: only the newest one may draw, or an older answer
// would bring back a state already gone (a restore's earlier phase).
let loads = 0;
let loading = false;

async function load() {
  const mine = ++loads;
  loading = true;
  try {
    await loadAs(mine);
  } finally {
    if (mine === loads) loading = false;
  }
}

async function loadAs(mine) {
  const app = appInput.value.trim();
  const token = tokenInput.value.trim();
  sessionStorage.setItem("paas-pitr-token", token);
  sessionStorage.setItem("paas-pitr-app", app);
  const container = $("#addons");
  if (!token) {
    container.replaceChildren();
    cards.clear();
    showEmpty("no-token", app);
    return;
  }
  try {
    const addons = await api("GET", `/apps/${path(app)}/addons`);
    const details = await Promise.all(addons.map(async (addon) => {
      if (addon.tier === "none") return [addon, null, [], []];
      const base = `/apps/${path(app)}/addons/${path(addon.addon_id)}`;
      const [listing, restores, drills] = await Promise.all([
        api("GET", `${base}/backups?per_page=50`), api("GET", `${base}/restores`),
        api("GET", `${base}/drills?per_page=50`),
      ]);
      return [addon, listing, restores, drills.items];
    }));
    if (mine !== loads) return;
    for (const id of [...cards.keys()]) {
      if (!addons.some((a) => a.addon_id === id) || cards.get(id).app !== app) cards.delete(id);
    }
    const nodes = details.map(([addon, listing, restores, drills]) => {
      const card = cards.get(addon.addon_id) || createCard(app, addon);
      updateCard(card, addon, listing, restores, drills);
      return card.node;
    });
    // Re-attach only when the set or order changed: moving a node would drop the focus of
    // an input being typed in.
    const current = [...container.children];
    if (current.length !== nodes.length || current.some((n, i) => n !== nodes[i])) {
      container.replaceChildren(...nodes);
    }
    busy = details.some(([, , restores]) => restores.some((r) => underWay(r.status)));
    showEmpty(addons.length ? null : "no-addons", app);
    tickElapsed();
  } catch (error) {
    if (mine === loads) report(error);
  }
}

function shareLink() {
  const link = `${location.origin}${location.pathname}#${new URLSearchParams({
    token: tokenInput.value.trim(), app: appInput.value.trim(),
  })}`;
  navigator.clipboard.writeText(link).then(
    () => say("Link copied: it holds your token, share it only with whom may act as you"),
    (error) => say(`Could not copy: ${error.message}`, true),
  );
}

$("#session").addEventListener("submit", (event) => {
  event.preventDefault();
  say("");
  load();
});
$("#share").addEventListener("click", shareLink);
// A link pasted into a tab already on the dashboard changes only the fragment: no reload.
window.addEventListener("hashchange", () => {
  applyFragment();
  say("");
  load();
});
$("#archives").addEventListener("submit", (event) => {
  event.preventDefault();
  const addonId = $("#archived-addon").value.trim();
  if (addonId) showIncarnations(appInput.value.trim(), addonId, $("#archived-incarnations"));
});
load();
setInterval(tickElapsed, 1000);
let last = Date.now();
setInterval(() => {
  const every = busy ? REFRESH_BUSY_MS : REFRESH_MS;
  if (tokenInput.value && !document.hidden && !loading && Date.now() - last >= every) {
    last = Date.now();
    load();
  }
}, 500);
