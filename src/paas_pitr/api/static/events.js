"use strict";
// Destructive events: the WAL archive of one addon scanned for DROP, TRUNCATE and large
// DELETE/UPDATE transactions, each with a one-click restore to just before it. A scan
// decodes archived WAL, so it runs when asked, never on the dashboard's 5 s refresh.

// One line of text per event (rendered with textContent by the caller).
function describeEvent(event) {
  const names = (event.relations || []).map((r) => r.name || r.file_node);
  const shown = names.slice(0, 3).join(", ") + (names.length > 3 ? ` (+${names.length - 3})` : "");
  return {
    id: event.id,
    when: event.committed_at,
    kind: event.kind,
    relations: shown,
    rows: event.rows == null ? "" : String(event.rows),
    xid: String(event.xid),
  };
}

function scanSummary(scan) {
  const rate = scan.mib_per_second == null ? "" : `, ${scan.mib_per_second} MiB/s`;
  return `Scanned ${scan.segments} WAL segments (${scan.mib} MiB) in ${scan.seconds} s${rate}`;
}

if (typeof module !== "undefined") {
  module.exports = { describeEvent, scanSummary };
} else {
  const form = document.querySelector("#events-form");
  const body = document.querySelector("#events tbody");
  const status = document.querySelector("#events-status");
  // The same typed UTC instant as the restore form: a locale date picker would read and
  // show local time. An instant that does not parse is refused here, before any scan.
  const instant = (name) => {
    const text = form.elements[name].value.trim();
    if (!text) return null;
    const micros = parseInstant(text);
    if (micros === null) throw new Error(`${name}: not an instant: type UTC as 2026-05-04T15:30:00.123456Z`);
    return formatInstant(micros);
  };
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const app = document.querySelector("#app").value.trim();
    const addon = form.elements.addon.value.trim();
    const query = new URLSearchParams();
    let bounds;
    try {
      bounds = [["from", instant("from")], ["to", instant("to")]];
    } catch (error) {
      status.textContent = error.message;
      return;
    }
    for (const [name, value] of [...bounds, ["kind", form.elements.kind.value]]) {
      if (value) query.set(name, value);
    }
    status.textContent = "Scanning the WAL archive…";
    body.replaceChildren();
    try {
      const listing = await api("GET", `/apps/${path(app)}/addons/${path(addon)}/events?${query}`);
      status.textContent = scanSummary(listing.scan) + (listing.items.length ? "" : ": no events");
      for (const found of listing.items) {
        const row = document.createElement("tr");
        const line = describeEvent(found);
        for (const text of [line.when, line.kind, line.relations, line.rows, line.xid]) cell(row, text);
        const action = cell(row, "");
        action.appendChild(button("Restore before", async () => {
          try {
            const restore = await api("POST", `/apps/${path(app)}/addons/${path(addon)}/restore`, { before_event: found.id });
            say(`Restore ${restore.restore_id} triggered: everything committed before transaction ${found.xid}, nothing of it`);
            await load();
          } catch (error) {
            say(error.message, true);
          }
        }));
        body.appendChild(row);
      }
    } catch (error) {
      status.textContent = "";
      say(error.message, true);
    }
  });
}
