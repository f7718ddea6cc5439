"use strict";
// The dashboard is a thin client of the public API: same token, same envelope, no secrets of
// its own. Everything user-supplied is rendered with textContent, never as markup, and
// connection strings are masked (secrets.js) until the user reveals one.
const $ = (selector, root = document) => root.querySelector(selector);
const tokenInput = $("#token");
const appInput = $("#app");
// `/dashboard#token=...` (what `paas-pitr token create --dashboard` prints) signs in; the
// fragment never reaches the server and is cleared from the address bar at once.
const fragment = new URLSearchParams(location.hash.slice(1));
if (fragment.get("token")) {
  sessionStorage.setItem("paas-pitr-token", fragment.get("token"));
  history.replaceState(null, "", location.pathname);
}
tokenInput.value = sessionStorage.getItem("paas-pitr-token") || "";
appInput.value = sessionStorage.getItem("paas-pitr-app") || appInput.value;

// A user-typed id goes into a URL path as one segment, never as more path or a query.
const path = encodeURIComponent;

function say(text, isError = false) {
  const message = $("#message");
  message.textContent = text;
  message.className = isError ? "error" : "";
}

async function api(method, path, body) {
  const options = { method, headers: { Authorization: `Bearer ${tokenInput.value.trim()}` } };
  if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const response = await fetch(`/v1${path}`, options);
  const payload = response.status === 204 ? {} : await response.json();
  if (!response.ok) {
    const error = payload.error || {};
    const window_ = error.details && error.details.window;
    const ranges = window_ && window_.ranges && window_.ranges.length
      ? window_.ranges.map((r) => `${r.earliest} .. ${r.latest}`).join(", ")
      : window_ && window_.state;
    const extra = window_ ? ` (restorable: ${ranges})` : "";
    throw new Error(`${error.code || response.status}: ${error.message || "request failed"}${extra}`);
  }
  return payload.data;
}

// Restores whose connection string the user chose to see; kept across the 5 s refresh.
const revealed = new Set();

function button(label, onClick) {
  const node = document.createElement("button");
  node.type = "button";
  node.textContent = label;
  node.addEventListener("click", onClick);
  return node;
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

function cell(row, text, status) {
  const td = document.createElement("td");
  td.textContent = text == null ? "" : String(text);
  if (status) td.className = `status-${status}`;
  row.appendChild(td);
  return td;
}

async function renderAddon(app, addon) {
  const node = $("#addon-template").content.firstElementChild.cloneNode(true);
  $(".name", node).textContent = addon.addon_id;
  $(".plan", node).textContent = `${addon.plan} (${addon.tier})`;
  const state = $(".state", node);
  state.textContent = addon.ready ? "ready" : addon.phase || "starting";
  state.className = `state status-${addon.ready ? "ready" : "pending"}`;
  if (addon.tier !== "none") {
    const listing = await api("GET", `/apps/${path(app)}/addons/${path(addon.addon_id)}/backups?per_page=20`);
    const w = listing.window;
    const lines = [`Recoverability window: ${w.state}${w.message ? ` - ${w.message}` : ""}`];
    for (const r of w.ranges || []) {
      lines.push(`restorable ${r.earliest} .. ${r.latest}${r.current ? "" : ` (ended: ${r.ended_because})`}`);
    }
    for (const p of w.restore_points || []) lines.push(`restore point ${p.at} (backup ${p.backup_id})`);
    $(".window", node).textContent = lines.join("\n");
    const wal = listing.wal_archive;
    const walLine = $(".wal", node);
    walLine.textContent = `WAL archive: ${wal.status}${wal.reason ? ` (${wal.reason})` : ""}${wal.hint ? ` - ${wal.hint}` : ""}`;
    walLine.className = `wal status-${wal.status}`;
    // The newest finished restore drill: proof the backups restore, and how long it took.
    const drill = addon.last_drill;
    const drillLine = $(".drill", node);
    drillLine.textContent = drill
      ? `Last restore drill: ${drill.status} at ${drill.finished_at}` +
        (drill.rto_seconds == null ? "" : `, RTO ${drill.rto_seconds.toFixed(1)} s`) +
        (drill.failing_check ? ` (failed at ${drill.failing_check})` : "")
      : "No restore drill yet";
    drillLine.className = `drill status-${drill ? drill.status : "pending"}`;
    const tbody = $(".backups tbody", node);
    for (const item of listing.items) {
      const row = document.createElement("tr");
      cell(row, item.backup_id || item.name);
      cell(row, item.status, item.status);
      cell(row, item.started_at);
      cell(row, item.stopped_at);
      cell(row, item.hint || item.error);
      tbody.appendChild(row);
    }
    const restores = await api("GET", `/apps/${path(app)}/addons/${path(addon.addon_id)}/restores`);
    const rbody = $(".restores tbody", node);
    for (const restore of restores) {
      const row = document.createElement("tr");
      cell(row, restore.restore_id.slice(0, 8));
      cell(row, restore.restores_to || restore.timestamp);
      cell(row, restore.reason ? `${restore.status}: ${restore.reason}` : restore.status, restore.status);
      cell(row, restore.cluster_name);
      connectionCell(row, restore);
      rbody.appendChild(row);
    }
    const form = $(".restore", node);
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const local = $("input", form).value;
      if (!local) return;
      const timestamp = `${local.length === 16 ? `${local}:00` : local}Z`;
      try {
        const restore = await api("POST", `/apps/${path(app)}/addons/${path(addon.addon_id)}/restore`, { timestamp });
        say(`Restore ${restore.restore_id} triggered: new cluster ${restore.cluster_name}` +
          (restore.message ? ` - ${restore.message}` : ""));
        await load();
      } catch (error) {
        say(error.message, true);
      }
    });
    $(".drill-now", form).addEventListener("click", async () => {
      try {
        const started = await api("POST", `/apps/${path(app)}/addons/${path(addon.addon_id)}/drills`);
        say(`Restore drill ${started.drill_id.slice(0, 8)} started: restoring into ${started.cluster_name}`);
      } catch (error) {
        say(error.message, true);
      }
    });
    $(".backup-now", form).addEventListener("click", async () => {
      try {
        const backup = await api("POST", `/apps/${path(app)}/addons/${path(addon.addon_id)}/backups`);
        say(`Backup ${backup.name} requested`);
        await load();
      } catch (error) {
        say(error.message, true);
      }
    });
  } else {
    $(".window", node).textContent = "The free plan has no backups.";
    for (const selector of [".backups", ".restore", ".restores", ".drill"]) $(selector, node).remove();
  }
  return node;
}

async function load() {
  const app = appInput.value.trim();
  sessionStorage.setItem("paas-pitr-token", tokenInput.value.trim());
  sessionStorage.setItem("paas-pitr-app", app);
  const container = $("#addons");
  try {
    const addons = await api("GET", `/apps/${path(app)}/addons`);
    const nodes = await Promise.all(addons.map((addon) => renderAddon(app, addon)));
    container.replaceChildren(...nodes);
    if (!addons.length) say(`App ${app} has no addons.`);
  } catch (error) {
    say(error.message, true);
  }
}

$("#session").addEventListener("submit", (event) => {
  event.preventDefault();
  say("");
  load();
});
if (tokenInput.value) load();
setInterval(() => { if (tokenInput.value && !document.hidden) load(); }, 5000);
