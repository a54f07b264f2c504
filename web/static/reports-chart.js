// Per-turn latency as stacked horizontal bars in inline SVG: where each turn's voice-to-voice
// time went. No chart library: a few rectangles, an axis, a legend and a table for screen readers.

const SVG_NS = "http://www.w3.org/2000/svg";

// The stages inside voice-to-voice, in the order they happen. "rest" is what voice-to-voice
// leaves after the measured stages: our own pipeline overhead and audio hand-off.
export const STAGES = [
  { key: "eou_delay_ms", id: "eou", label: "End of utterance" },
  { key: "stt_ms", id: "stt", label: "Speech to text" },
  { key: "llm_ttft_ms", id: "llm", label: "LLM first token" },
  { key: "tool_ms", id: "tool", label: "Tools" },
  { key: "tts_ttfb_ms", id: "tts", label: "TTS first byte" },
  { key: null, id: "rest", label: "Rest of voice-to-voice" },
];

const LABEL_W = 88;
const VALUE_W = 76;
const ROW_H = 28;
const BAR_H = 18;
const AXIS_H = 26;

function svg(tag, attrs = {}, text) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attrs)) el.setAttribute(name, String(value));
  if (text !== undefined) el.textContent = text;
  return el;
}

function ms(value) {
  return value == null ? "—" : `${Math.round(value).toLocaleString()} ms`;
}

/** The segments of one turn: [{id, label, value}], with the unexplained rest last. */
export function segmentsOf(turn) {
  const parts = [];
  let measured = 0;
  for (const stage of STAGES) {
    if (stage.key === null) continue;
    const value = turn[stage.key];
    if (typeof value === "number" && value > 0) {
      parts.push({ id: stage.id, label: stage.label, value });
      measured += value;
    }
  }
  const total = turn.voice_to_voice_ms;
  if (typeof total === "number" && total > measured) {
    parts.push({ id: "rest", label: "Rest of voice-to-voice", value: total - measured });
  }
  return parts;
}

function niceStep(max) {
  const rough = max / 4;
  const power = 10 ** Math.floor(Math.log10(rough));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * power >= rough) return m * power;
  return 10 * power;
}

function median(values) {
  if (!values.length) return null;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

function describe(metrics) {
  const v2v = metrics.map((t) => t.voice_to_voice_ms).filter((v) => typeof v === "number");
  if (!v2v.length) return `${metrics.length} agent turns; voice-to-voice was not measured.`;
  const slowest = metrics.reduce((a, b) =>
    (b.voice_to_voice_ms ?? -1) > (a.voice_to_voice_ms ?? -1) ? b : a);
  return `${metrics.length} agent turns. Median voice-to-voice ${ms(median(v2v))}; ` +
    `slowest was turn ${slowest.turn} at ${ms(slowest.voice_to_voice_ms)}. ` +
    "The table below lists every stage of every turn.";
}

/** Draw the chart into `host` (cleared first), sized to its width. */
export function drawLatencyChart(host, metrics, idBase = "latency") {
  host.replaceChildren();
  const width = Math.max(300, Math.floor(host.clientWidth || 640));
  const rows = metrics.map((turn) => ({ turn, parts: segmentsOf(turn) }));
  const maxTotal = Math.max(
    1,
    ...rows.map(({ turn, parts }) =>
      Math.max(turn.voice_to_voice_ms ?? 0, parts.reduce((sum, p) => sum + p.value, 0))),
  );
  const step = niceStep(maxTotal);
  const axisMax = Math.ceil(maxTotal / step) * step;
  const plotW = width - LABEL_W - VALUE_W;
  const x = (value) => LABEL_W + (value / axisMax) * plotW;
  const height = rows.length * ROW_H + AXIS_H + 4;

  const titleId = `${idBase}-title`;
  const descId = `${idBase}-desc`;
  const root = svg("svg", {
    width, height, viewBox: `0 0 ${width} ${height}`, role: "img",
    "aria-labelledby": titleId, "aria-describedby": descId, class: "latency-svg",
  });
  root.append(svg("title", { id: titleId }, "Voice-to-voice latency per turn, split by stage"));
  root.append(svg("desc", { id: descId }, describe(metrics)));

  for (let v = 0; v <= axisMax + 1e-9; v += step) {
    const gx = x(v);
    root.append(svg("line", { x1: gx, x2: gx, y1: 0, y2: rows.length * ROW_H, class: "grid" }));
    root.append(svg("text", {
      x: gx, y: rows.length * ROW_H + 16, class: "axis-label", "text-anchor": "middle",
    }, v >= 1000 ? `${(v / 1000).toLocaleString()} s` : `${v} ms`));
  }

  rows.forEach(({ turn, parts }, i) => {
    const y = i * ROW_H + (ROW_H - BAR_H) / 2;
    const group = svg("g", { class: "turn-row" });
    group.append(svg("text", {
      x: LABEL_W - 8, y: y + BAR_H / 2 + 4, "text-anchor": "end", class: "row-label",
    }, `Turn ${turn.turn}${turn.interrupted ? " ⚡" : ""}`));
    let at = 0;
    for (const part of parts) {
      const rect = svg("rect", {
        x: x(at), y, width: Math.max(0.5, x(at + part.value) - x(at)), height: BAR_H,
        class: `seg seg-${part.id}`,
      });
      rect.append(svg("title", {}, `Turn ${turn.turn} · ${part.label}: ${ms(part.value)}`));
      group.append(rect);
      at += part.value;
    }
    group.append(svg("text", {
      x: x(at) + 6, y: y + BAR_H / 2 + 4, class: "value-label",
    }, ms(turn.voice_to_voice_ms ?? at)));
    root.append(group);
  });
  host.append(root);
}

/** The legend as an HTML list (readable, wraps at phone width). */
export function latencyLegend() {
  const list = document.createElement("ul");
  list.className = "legend";
  for (const stage of STAGES) {
    const item = document.createElement("li");
    const swatch = document.createElement("span");
    swatch.className = `swatch seg-${stage.id}`;
    swatch.setAttribute("aria-hidden", "true");
    item.append(swatch, stage.label);
    list.append(item);
  }
  const note = document.createElement("li");
  note.className = "legend-note";
  note.textContent = "⚡ the caller interrupted the agent";
  list.append(note);
  return list;
}

/** The same numbers as a table: the chart's text alternative. */
export function latencyTable(metrics) {
  const table = document.createElement("table");
  table.className = "data-table latency-table";
  const caption = document.createElement("caption");
  caption.textContent = "Latency per turn in milliseconds";
  const head = document.createElement("tr");
  for (const name of ["Turn", ...STAGES.filter((s) => s.key).map((s) => s.label), "Voice-to-voice"]) {
    const th = document.createElement("th");
    th.scope = "col";
    th.textContent = name;
    head.append(th);
  }
  const thead = document.createElement("thead");
  thead.append(head);
  const tbody = document.createElement("tbody");
  for (const turn of metrics) {
    const row = document.createElement("tr");
    const th = document.createElement("th");
    th.scope = "row";
    th.textContent = `${turn.turn}${turn.interrupted ? " (interrupted)" : ""}`;
    row.append(th);
    for (const key of [...STAGES.filter((s) => s.key).map((s) => s.key), "voice_to_voice_ms"]) {
      const td = document.createElement("td");
      td.className = "num";
      td.textContent = turn[key] == null ? "—" : Math.round(turn[key]).toLocaleString();
      row.append(td);
    }
    tbody.append(row);
  }
  table.append(caption, thead, tbody);
  return table;
}
