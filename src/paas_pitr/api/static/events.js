"use strict";
// Destructive events: the WAL archive of one addon scanned for DROP, TRUNCATE and large
// DELETE/UPDATE transactions, each with a one-click restore to just before it. A scan
// decodes archived WAL, so it runs when asked, never on the dashboard's 5 s refresh: from
// the "Destructive events" section (any range) or a card's "Find events in this window"
// (its current range, newest part first when it is longer than one scan may read). What a
// scan found is drawn on the addon's timeline until the next scan of that addon.

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

// What a listing leaves out, in words: "" when nothing.
function scanLimits(listing) {
  const notes = [];
  if (listing.scan.limited_from) {
    notes.push(`the range holds more WAL than one scan may read: only events committed since ` +
      `${listing.scan.limited_from} were looked for`);
  }
  if (listing.truncated) notes.push(`more than ${listing.items.length} events: the oldest are listed`);
  return notes.join("; ");
}

function progressText(progress) {
  const mib = (bytes) => Math.round(bytes / 1048576);
  return `Scanning the WAL archive: ${progress.segments_done}/${progress.segments_total} segments ` +
    `(${mib(progress.bytes_done)}/${mib(progress.bytes_total)} MiB)`;
}

// Complete lines of a growing text buffer: [lines, the unfinished rest].
function splitLines(buffer) {
  const lines = buffer.split("\n");
  const rest = lines.pop();
  return [lines.filter((line) => line.trim()), rest];
}

// The browser's side (the functions below run in the page only; node loads this file for
// the pure helpers above).

// GET .../events as a stream of JSON lines: onProgress gets each progress line, the
// listing is returned; an error answered before the scan (its HTTP status) or during it
// (an error line) is thrown as the ApiError the rest of the dashboard shows.
async function scanEvents(app, addon, query, onProgress) {
  const response = await fetch(`/v1/apps/${path(app)}/addons/${path(addon)}/events?${query}`, {
    headers: { Authorization: `Bearer ${tokenInput.value.trim()}`, Accept: "application/x-ndjson" },
  });
  if (!response.ok) {
    const payload = await response.json().catch(() => ({}));
    throw new ApiError(response.status, payload.error || {});
  }
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { done, value } = await reader.read();
    buffer += decoder.decode(value || new Uint8Array(), { stream: !done });
    const [lines, rest] = splitLines(done ? `${buffer}\n` : buffer);
    buffer = rest;
    for (const line of lines) {
      const message = JSON.parse(line);
      if (message.progress) onProgress(message.progress);
      else if (message.error) throw new ApiError(response.status, message.error);
      else if (message.result) return message.result;
    }
    if (done) throw new Error("the scan ended without its result");
  }
}

function showProgress(bar, status, progress) {
  bar.hidden = false;
  bar.max = Math.max(1, progress.segments_total);
  bar.value = progress.segments_done;
  status.textContent = progressText(progress);
}

// Found events of an addon shown on its card's timeline (redrawn by the next refresh).
function drawOnCard(addon, items) {
  const card = cards.get(addon);
  if (!card) return;
  card.events = items;
  load();
}

// One click on an event (its timeline mark, or its row's button), one confirmation: a
// restore into a new cluster, just before it. `mark`: timeline.js's eventMark.
async function restoreBefore(app, addon, mark) {
  const question = `Restore ${addon} into a new cluster as it was just before this ` +
    `${mark.kind} (${mark.relations || "no relation named"}, transaction ${mark.xid}, ` +
    `committed ${formatInstant(mark.at)})?`;
  if (!window.confirm(question)) return;
  try {
    const restore = await api("POST", `/apps/${path(app)}/addons/${path(addon)}/restore`, { before_event: mark.id });
    say(`Restore ${restore.restore_id} triggered: new cluster ${restore.cluster_name}, everything ` +
      `committed before transaction ${mark.xid}, nothing of it`);
    await load();
  } catch (error) {
    report(error);
  }
}

// A card's "Find events in this window": its current range (else its newest), newest part
// first when it holds more WAL than one scan may read.
async function findWindowEvents(card) {
  const status = role("events-status", card.node);
  const bar = role("events-progress", card.node);
  const ranges = (card.model && card.model.ranges) || [];
  const range = ranges.find((r) => r.current) || ranges[ranges.length - 1];
  if (!range) {
    status.textContent = "Nothing restorable yet: no events to look for";
    return;
  }
  const query = new URLSearchParams({
    from: formatInstant(range.earliest), to: formatInstant(range.latest), bound: "newest",
  });
  status.textContent = "Scanning the WAL archive…";
  try {
    const listing = await scanEvents(card.app, card.id, query, (p) => showProgress(bar, status, p));
    const limits = scanLimits(listing);
    const found = listing.items.length
      ? `${listing.items.length} event(s) on the timeline, click one to restore to just before it`
      : "no destructive event in this window";
    status.textContent = `${scanSummary(listing.scan)}: ${found}` + (limits ? ` (${limits})` : "");
    drawOnCard(card.id, listing.items);
  } catch (error) {
    status.textContent = "";
    report(error);
  } finally {
    bar.hidden = true;
  }
}

if (typeof module !== "undefined") {
  module.exports = { describeEvent, scanSummary, scanLimits, progressText, splitLines };
} else {
  const form = document.querySelector("#events-form");
  const body = document.querySelector("#events tbody");
  const status = document.querySelector("#events-status");
  const bar = document.querySelector("#events-progress");
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
      const listing = await scanEvents(app, addon, query, (p) => showProgress(bar, status, p));
      const limits = scanLimits(listing);
      status.textContent = scanSummary(listing.scan) + (listing.items.length ? "" : ": no events") +
        (limits ? ` (${limits})` : "");
      drawOnCard(addon, listing.items);
      for (const found of listing.items) {
        const row = document.createElement("tr");
        const line = describeEvent(found);
        for (const text of [line.when, line.kind, line.relations, line.rows, line.xid]) cell(row, text);
        const action = cell(row, "");
        const mark = eventMark(found);
        if (mark) action.appendChild(button("Restore before", () => restoreBefore(app, addon, mark)));
        body.appendChild(row);
      }
    } catch (error) {
      status.textContent = "";
      say(error.message, true);
    } finally {
      bar.hidden = true;
    }
  });
}
