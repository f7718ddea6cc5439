"use strict";
// The recoverability window of one addon as a timeline: restorable ranges, the gaps between
// them, base backups as marks, restores (and drills) at their targets. Instants are kept as
// whole microseconds since the epoch (a Number is exact to 2^53 µs, year 2255), because the
// API speaks microseconds and a JavaScript Date only milliseconds.

const INSTANT_PATTERN = /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,6}))?(Z|[+-]00:00)$/;

// "2026-05-04T15:30:00.123456Z" -> µs since the epoch; null for anything else (only UTC:
// the dashboard never reads or writes a local time).
function parseInstant(text) {
  if (typeof text !== "string") return null;
  const match = INSTANT_PATTERN.exec(text.trim());
  if (!match) return null;
  const seconds = Date.parse(`${match[1]}Z`);
  if (Number.isNaN(seconds)) return null;
  return seconds * 1000 + Number((match[2] || "").padEnd(6, "0"));
}

// µs since the epoch -> "2026-05-04T15:30:00.123456Z" (always six digits, always UTC).
function formatInstant(micros) {
  const whole = Math.floor(micros / 1e6);
  const fraction = String(Math.round(micros - whole * 1e6)).padStart(6, "0");
  return `${new Date(whole * 1000).toISOString().slice(0, 19)}.${fraction}Z`;
}

// A destructive event of GET .../events as the timeline marks it; null without a commit
// time. `relations` names at most three (a dropped relation by its file node).
function eventMark(event) {
  const at = parseInstant(event.committed_at);
  if (at === null) return null;
  const names = (event.relations || []).map((r) => r.name || r.file_node);
  const relations = names.slice(0, 3).join(", ") + (names.length > 3 ? ` (+${names.length - 3})` : "");
  const rows = event.rows == null ? "" : `, ${event.rows} rows`;
  return {
    id: event.id,
    kind: event.kind,
    xid: event.xid,
    at,
    relations,
    title: `${event.kind} ${relations || "(no relation)"}${rows}, transaction ${event.xid}, ` +
      `committed ${formatInstant(at)}: click to restore to just before it`,
  };
}

// What the timeline shows, from GET .../backups (`listing`) and GET .../restores, at `now`
// (µs), with the destructive events found in the archive (GET .../events items). Ranges and
// gaps are from the window; a standard addon has restore points instead.
function timelineModel(listing, restores, now, drills = [], found = []) {
  const window_ = listing.window || {};
  const ranges = (window_.ranges || []).map((r) => ({
    earliest: parseInstant(r.earliest),
    latest: parseInstant(r.latest),
    current: !!r.current,
    endedBecause: r.ended_because || null,
  })).filter((r) => r.earliest !== null && r.latest !== null);
  ranges.sort((a, b) => a.earliest - b.earliest);
  const gaps = [];
  for (let i = 1; i < ranges.length; i += 1) {
    gaps.push({ from: ranges[i - 1].latest, to: ranges[i].earliest, because: ranges[i - 1].endedBecause });
  }
  const backups = (listing.items || []).map((b) => ({
    id: b.backup_id || b.name,
    status: b.status,
    at: parseInstant(b.stopped_at) ?? parseInstant(b.started_at),
  })).filter((b) => b.at !== null);
  const points = (window_.restore_points || []).map((p) => ({
    id: p.backup_id, name: p.name, at: parseInstant(p.at),
  })).filter((p) => p.at !== null);
  const marks = (items, kind) => items.map((r) => ({
    kind,
    id: r.restore_id || r.drill_id || r.id,
    status: r.status,
    at: parseInstant(r.restores_to) ?? parseInstant(r.timestamp) ?? parseInstant(r.target_time),
  })).filter((r) => r.at !== null);
  const targets = [...marks(restores || [], "restore"), ...marks(drills, "drill")];
  const events = (found || []).map(eventMark).filter((e) => e !== null);
  const known = [
    ...ranges.flatMap((r) => [r.earliest, r.latest]),
    ...backups.map((b) => b.at),
    ...points.map((p) => p.at),
    ...targets.map((t) => t.at),
    ...events.map((e) => e.at),
  ];
  if (!known.length) return null;
  let start = Math.min(...known);
  let end = Math.max(now, ...known);
  const pad = Math.max((end - start) * 0.03, 60e6);
  start -= pad;
  end += pad;
  return { start, end, now, ranges, gaps, backups, points, targets, events };
}

// The restorable range holding `micros`, or null.
function rangeAt(model, micros) {
  return (model && model.ranges.find((r) => r.earliest <= micros && micros <= r.latest)) || null;
}

const SVG = "http://www.w3.org/2000/svg";

function svgNode(name, attributes, title) {
  const node = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, String(value));
  if (title) {
    const tip = document.createElementNS(SVG, "title");
    tip.textContent = title;
    node.appendChild(tip);
  }
  return node;
}

// One shape per kind of event, centred at (x, y): told apart without colour too.
const EVENT_SHAPES = {
  drop: (x, y) => `M ${x} ${y - 8} l 8 8 l -8 8 l -8 -8 z`,
  truncate: (x, y) => `M ${x - 6} ${y - 6} h 12 v 12 h -12 z`,
  delete: (x, y) => `M ${x - 7} ${y} a 7 7 0 1 0 14 0 a 7 7 0 1 0 -14 0 z`,
  // Pointing down: restores and drills are the triangles pointing up.
  update: (x, y) => `M ${x} ${y + 7} l 8 -14 l -16 0 z`,
};
const EVENT_LANE = 20;
const MAX_EVENT_LANES = 6;

// Events are drawn in a strip under the timeline, one lane each where marks closer than
// `gap` (px, in time order) would cover each other; at most MAX_EVENT_LANES lanes, the
// last taking what does not fit. xs: the marks' x, ascending -> their lanes.
function eventLanes(xs, gap = 18) {
  const ends = [];
  return xs.map((x) => {
    let lane = ends.findIndex((end) => x - end >= gap);
    if (lane === -1) lane = Math.min(ends.length, MAX_EVENT_LANES - 1);
    ends[lane] = x;
    return lane;
  });
}

// Draw `model` into `container` (replacing what was there). A click inside a range calls
// onPick(µs) with the instant under the pointer (clamped to the range); a click on a
// restore point calls onPick with its instant; a click on an event calls onEvent(mark).
function renderTimeline(container, model, onPick, { width = 720, onEvent = null } = {}) {
  const base = 72;
  const left = 8;
  const right = width - 8;
  const span = model.end - model.start;
  const x = (micros) => left + ((micros - model.start) / span) * (right - left);
  const events = [...model.events].sort((a, b) => a.at - b.at);
  const lanes = eventLanes(events.map((e) => x(e.at)));
  const height = events.length ? base + 8 + (Math.max(...lanes) + 1) * EVENT_LANE : base;
  const svg = svgNode("svg", {
    class: "timeline", viewBox: `0 0 ${width} ${height}`, width: "100%", role: "img",
    "aria-label": "recoverability window",
  });
  svg.appendChild(svgNode("line", { class: "axis", x1: left, x2: right, y1: 40, y2: 40 }));
  for (const gap of model.gaps) {
    svg.appendChild(svgNode("rect", {
      class: "gap", x: x(gap.from), y: 30, width: Math.max(1, x(gap.to) - x(gap.from)), height: 20,
    }, `gap: ${formatInstant(gap.from)} .. ${formatInstant(gap.to)}${gap.because ? ` (${gap.because})` : ""}`));
  }
  model.ranges.forEach((range, index) => {
    const bar = svgNode("rect", {
      class: `range${range.current ? " current" : ""}`, "data-index": index,
      x: x(range.earliest), y: 30, width: Math.max(2, x(range.latest) - x(range.earliest)), height: 20,
    }, `restorable: ${formatInstant(range.earliest)} .. ${formatInstant(range.latest)}`);
    bar.addEventListener("click", (event) => {
      const box = svg.getBoundingClientRect();
      const px = ((event.clientX - box.left) / box.width) * width;
      const picked = Math.round(model.start + ((px - left) / (right - left)) * span);
      onPick(Math.min(range.latest, Math.max(range.earliest, picked)));
    });
    svg.appendChild(bar);
  });
  for (const backup of model.backups) {
    svg.appendChild(svgNode("path", {
      class: `backup status-${backup.status}`,
      d: `M ${x(backup.at)} 28 l -5 -9 l 10 0 z`,
    }, `base backup ${backup.id} (${backup.status}) ended ${formatInstant(backup.at)}`));
  }
  for (const point of model.points) {
    const mark = svgNode("circle", {
      class: "point", cx: x(point.at), cy: 40, r: 6, "data-backup": point.id,
    }, `restore point: backup ${point.id} at ${formatInstant(point.at)}`);
    mark.addEventListener("click", () => onPick(point.at, point));
    svg.appendChild(mark);
  }
  for (const target of model.targets) {
    svg.appendChild(svgNode("path", {
      class: `${target.kind} status-${target.status}`,
      d: `M ${x(target.at)} 52 l -5 9 l 10 0 z`,
    }, `${target.kind} ${target.id ? String(target.id).slice(0, 8) : ""} (${target.status}) to ${formatInstant(target.at)}`));
  }
  events.forEach((event, index) => {
    const cy = base + 4 + lanes[index] * EVENT_LANE + EVENT_LANE / 2;
    svg.appendChild(svgNode("line", { class: "event-stem", x1: x(event.at), x2: x(event.at), y1: 50, y2: cy }));
    const mark = svgNode("path", {
      class: `event event-${event.kind}`, d: (EVENT_SHAPES[event.kind] || EVENT_SHAPES.update)(x(event.at), cy),
      "data-role": "event-mark", "data-event": event.id, "data-kind": event.kind,
    }, event.title);
    if (onEvent) mark.addEventListener("click", () => onEvent(event));
    svg.appendChild(mark);
  });
  svg.appendChild(svgNode("line", { class: "now", x1: x(model.now), x2: x(model.now), y1: 22, y2: 58 }, "now"));
  const label = (micros, anchor, y) => {
    const text = svgNode("text", { x: x(micros), y, "text-anchor": anchor, class: "bound" });
    text.textContent = formatInstant(micros).slice(0, 19).replace("T", " ");
    return text;
  };
  const first = model.ranges[0] || model.points[model.points.length - 1];
  const from = first ? first.earliest ?? first.at : null;
  if (from !== null) svg.appendChild(label(from, "start", 14));
  // Two labels closer than one label's width: "now" goes under the axis.
  const apart = from === null || x(model.now) - x(from) > 130;
  svg.appendChild(label(model.now, "end", apart ? 14 : base - 1));
  container.replaceChildren(svg);
  return svg;
}

if (typeof module !== "undefined") {
  module.exports = { parseInstant, formatInstant, timelineModel, rangeAt, eventMark, eventLanes };
}
