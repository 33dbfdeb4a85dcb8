// The replay's model, without the DOM: a session's timeline turned into the document, its
// language, the latest change and the latest run at every position of the slider.
//
// Position 0 is the document at `firstVersion`, before any item; position k is the moment
// just after items[k - 1]. A change item's version is the version it produced; any other
// item (an event) carries the version the document had when it happened.

// A pause between two items longer than this plays as this long (at 1x): an interview has
// minutes of reading and thinking that a replay should not make you sit through.
export const IDLE_CAP_MS = 2000;
// Every CHECKPOINT_INTERVAL-th version's text is kept, so a seek applies at most that many changes.
export const CHECKPOINT_INTERVAL = 100;
export const SPEEDS = [1, 4, 16];

// The index of "no such item yet" (no change or run before a position).
const NO_ITEM = -1;

function changeParts(change) {
  // CodeMirror's change spec: `to` defaults to `from`, `insert` to nothing.
  const from = change.from;
  const to = change.to ?? from;
  const insert = change.insert ?? "";
  return { from, to, insert };
}

/** The text after `changes` (CodeMirror change specs against `text`, in ascending order and not
 * overlapping, offsets in UTF-16 code units: what JavaScript's string indices count). */
export function applyChanges(text, changes) {
  let out = "";
  let pos = 0;
  for (const change of changes) {
    const { from, to, insert } = changeParts(change);
    if (!Number.isInteger(from) || !Number.isInteger(to) || from < pos || to < from || to > text.length) {
      throw new RangeError(`a change from ${from} to ${to} does not fit the document (${text.length} long)`);
    }
    if (typeof insert !== "string") {
      throw new TypeError("a change's insert is not text");
    }
    out += text.slice(pos, from) + insert;
    pos = to;
  }
  return out + text.slice(pos);
}

/** Where `changes` left their text in the new document: `{from, to}` per change, in the new
 * document's offsets; an empty range (`from === to`) is a deletion that inserted nothing. */
export function changedRanges(changes) {
  const ranges = [];
  let shift = 0;
  for (const change of changes) {
    const { from, to, insert } = changeParts(change);
    const start = from + shift;
    ranges.push({ from: start, to: start + insert.length });
    shift += insert.length - (to - from);
  }
  return ranges;
}

/** Milliseconds between two ISO 8601 timestamps, never negative (clocks of two processes). */
export function gapMs(earlier, later) {
  const gap = Date.parse(later) - Date.parse(earlier);
  return Number.isFinite(gap) && gap > 0 ? gap : 0;
}

export class TimelineError extends Error {}

export class Replay {
  /**
   * @param {object} init
   * @param {number} init.firstVersion the oldest version the session still shows
   * @param {string} init.firstText the document at firstVersion
   * @param {string} init.language the language the code answer gave, used when no item says better
   * @param {object[]} init.items the timeline's items, oldest first
   */
  constructor({ firstVersion, firstText, language, items }) {
    this.firstVersion = firstVersion;
    this.items = items;
    // changes[v - firstVersion - 1]: the changes that made version v.
    this.changes = [];
    this.checkpoints = new Map([[firstVersion, firstText]]);
    const count = items.length + 1;
    this.versions = new Array(count);
    this.changeIndex = new Array(count);
    this.runIndex = new Array(count);
    this.languages = new Array(count);

    const firstLanguageChange = items.find((item) => item.type === "language-change");
    let lang = firstLanguageChange ? firstLanguageChange.from : language;
    let version = firstVersion;
    let text = firstText;
    let change = NO_ITEM;
    let run = NO_ITEM;
    this.versions[0] = version;
    this.changeIndex[0] = change;
    this.runIndex[0] = run;
    this.languages[0] = lang;

    items.forEach((item, index) => {
      if (item.type === "change") {
        if (item.version > version + 1) {
          throw new TimelineError(`The timeline misses the change that made version ${version + 1}.`);
        }
        if (item.version === version + 1) {
          text = applyChanges(text, item.changes);
          version = item.version;
          this.changes.push(item.changes);
          if (version % CHECKPOINT_INTERVAL === 0) {
            this.checkpoints.set(version, text);
          }
          change = index;
        }
        // A change at or below firstVersion is in firstText already.
      } else {
        if (item.version > version) {
          throw new TimelineError(`An event at version ${item.version} came before that version's change.`);
        }
        if (item.type === "run") {
          run = index;
        } else if (item.type === "language-change") {
          lang = item.to;
        }
      }
      this.versions[index + 1] = version;
      this.changeIndex[index + 1] = change;
      this.runIndex[index + 1] = run;
      this.languages[index + 1] = lang;
    });
    this.lastVersion = version;
    this.lastText = text;
    // The text last asked for, so stepping forward applies one change, not a checkpoint's worth.
    this.cache = { version, text };
  }

  /** The slider's last position (the number of items). */
  get end() {
    return this.items.length;
  }

  versionAt(position) {
    return this.versions[position];
  }

  languageAt(position) {
    return this.languages[position];
  }

  /** The item at `position` (the one just played), or null at the start. */
  itemAt(position) {
    return position > 0 ? this.items[position - 1] : null;
  }

  /** The latest change item at or before `position`, or null. */
  changeAt(position) {
    const index = this.changeIndex[position];
    return index === NO_ITEM ? null : this.items[index];
  }

  /** The latest run item at or before `position`, or null. */
  runAt(position) {
    const index = this.runIndex[position];
    return index === NO_ITEM ? null : this.items[index];
  }

  textAt(position) {
    return this.textOf(this.versions[position]);
  }

  textOf(version) {
    if (version === this.cache.version) {
      return this.cache.text;
    }
    let base = Math.max(this.firstVersion, version - (version % CHECKPOINT_INTERVAL));
    let text = this.checkpoints.get(base);
    if (this.cache.version > base && this.cache.version < version) {
      base = this.cache.version;
      text = this.cache.text;
    }
    for (let v = base + 1; v <= version; v += 1) {
      text = applyChanges(text, this.changes[v - this.firstVersion - 1]);
    }
    this.cache = { version, text };
    return text;
  }

  /** Milliseconds a playback at `speed` waits before going from `position` to the next one, or
   * null at the end: the real time between the two items, idle gaps capped at IDLE_CAP_MS. */
  delayAfter(position, speed) {
    if (position >= this.end) {
      return null;
    }
    if (position === 0) {
      return 0;
    }
    const gap = gapMs(this.items[position - 1].timestamp, this.items[position].timestamp);
    return Math.min(gap, IDLE_CAP_MS) / speed;
  }
}
