// Live captions for both sides, one line per caption segment.
//
// The agent sends each version of a segment as its own text stream on `lk.transcription`
// (attributes: lk.segment_id, lk.transcription_final). Interim text is shown in place inside an
// aria-hidden span, so screen readers are not flooded with every partial; the final text is added
// as a new node, which the role="log" live region announces once.

import { el } from "./dom.js";

const MAX_LINES = 200;

export class CaptionBoard {
  constructor({ list, empty }) {
    this._list = list;
    this._empty = empty;
    this._lines = new Map(); // segment id -> {item, final}
  }

  /** Show one version of a segment; an interim version after the final one is ignored. */
  show({ segmentId, speaker, text, final }) {
    let line = this._lines.get(segmentId);
    if (line?.final) return;
    if (final && !text.trim()) {
      // A segment that ended with no words (cut off before it was heard, or not understood).
      line?.item.remove();
      this._lines.set(segmentId, { item: el("li"), final: true });
      this._empty.hidden = this._list.children.length > 0;
      return;
    }
    if (line === undefined) {
      if (!final && !text.trim()) return;
      line = this._newLine(segmentId, speaker);
    }
    const body = line.item.querySelector(".caption-text");
    if (final) {
      line.final = true;
      line.item.classList.remove("interim");
      body.replaceWith(el("span", { className: "caption-text", text }));
    } else {
      body.textContent = text;
    }
  }

  clear() {
    this._lines.clear();
    this._list.replaceChildren();
    this._empty.hidden = false;
  }

  _newLine(segmentId, speaker) {
    const item = el("li", { className: `caption ${speaker} interim` });
    item.dataset.speaker = speaker;
    item.dataset.segment = segmentId;
    item.append(
      el("span", { className: "caption-speaker", text: speaker === "user" ? "You" : "Agent" }),
      el("span", { className: "caption-text", attrs: { "aria-hidden": "true" } }),
    );
    this._list.append(item);
    this._empty.hidden = true;
    const line = { item, final: false };
    this._lines.set(segmentId, line);
    while (this._lines.size > MAX_LINES) {
      const [oldest, old] = this._lines.entries().next().value;
      old.item.remove();
      this._lines.delete(oldest);
    }
    item.scrollIntoView?.({ block: "nearest" });
    return line;
  }
}
