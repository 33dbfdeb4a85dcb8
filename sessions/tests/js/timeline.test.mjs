// The replay page's model (sessions/static/replay/timeline.mjs), under node's own test runner.
import assert from "node:assert/strict";
import { test } from "node:test";

import {
  applyChanges,
  CHECKPOINT_INTERVAL,
  changedRanges,
  IDLE_CAP_MS,
  Replay,
  TimelineError,
} from "../../static/replay/timeline.mjs";

const at = (seconds) => new Date(Date.UTC(2026, 11, 4, 18, 0, 0) + seconds * 1000).toISOString();
const change = (version, seconds, changes) => ({ type: "change", version, timestamp: at(seconds), userId: "u1", changes });

test("changes apply in ascending order against the old document", () => {
  const changes = [
    { from: 0, to: 0, insert: ">" },
    { from: 1, to: 3, insert: "B" },
    { from: 5, to: 6 },
  ];
  assert.equal(applyChanges("abcdef", changes), ">aBde");
});

test("offsets count UTF-16 code units, as the server's do", () => {
  // The emoji is two code units: the change after it starts at 2.
  assert.equal(applyChanges("😀x", [{ from: 2, to: 3, insert: "y" }]), "😀y");
  assert.equal(applyChanges("a", [{ from: 1, insert: "😀" }]), "a😀");
});

test("a change that does not fit the document is refused", () => {
  assert.throws(() => applyChanges("ab", [{ from: 1, to: 5, insert: "" }]), RangeError);
  assert.throws(() => applyChanges("abc", [{ from: 2, to: 3 }, { from: 0, to: 1 }]), RangeError);
  assert.throws(() => applyChanges("abc", [{ from: 2, to: 1 }]), RangeError);
});

test("changed ranges are where the inserted text lands in the new document", () => {
  const changes = [
    { from: 0, to: 2, insert: "xyz" },
    { from: 4, to: 5, insert: "" },
    { from: 6, to: 6, insert: "q" },
  ];
  assert.equal(applyChanges("abcdefg", changes), "xyzcdfqg");
  assert.deepEqual(changedRanges(changes), [
    { from: 0, to: 3 },
    { from: 5, to: 5 },
    { from: 6, to: 7 },
  ]);
});

test("each position shows its version, language, latest change and latest run", () => {
  const run = { type: "run", id: 3, version: 2, timestamp: at(3), stdout: "hi\n" };
  const items = [
    change(1, 1, [{ from: 0, to: 0, insert: "a" }]),
    { type: "language-change", id: 2, version: 1, timestamp: at(2), from: "python", to: "javascript" },
    change(2, 2.5, [{ from: 1, to: 1, insert: "b" }]),
    run,
    { type: "title-change", id: 4, version: 2, timestamp: at(4), description: "Title set to 'T'" },
  ];
  const replay = new Replay({ firstVersion: 0, firstText: "", language: "javascript", items });
  assert.equal(replay.end, 5);
  assert.deepEqual(
    [0, 1, 2, 3, 4, 5].map((p) => replay.versionAt(p)),
    [0, 1, 1, 2, 2, 2],
  );
  assert.deepEqual(
    [0, 1, 2, 3, 4, 5].map((p) => replay.textAt(p)),
    ["", "a", "a", "ab", "ab", "ab"],
  );
  assert.deepEqual(
    [0, 1, 2].map((p) => replay.languageAt(p)),
    ["python", "python", "javascript"],
  );
  assert.equal(replay.changeAt(0), null);
  assert.equal(replay.changeAt(2), items[0]);
  assert.equal(replay.runAt(3), null);
  assert.equal(replay.runAt(5), run);
});

test("seeking anywhere gives the text the changes build, through checkpoints", () => {
  const items = [];
  let text = "";
  const texts = [text];
  for (let v = 1; v <= 3 * CHECKPOINT_INTERVAL + 7; v += 1) {
    const insert = String(v % 10);
    const from = v % 3 === 0 ? 0 : text.length;
    items.push(change(v, v, [{ from, to: from, insert }]));
    text = applyChanges(text, [{ from, to: from, insert }]);
    texts.push(text);
  }
  const replay = new Replay({ firstVersion: 0, firstText: "", language: "python", items });
  assert.equal(replay.checkpoints.size, 4);
  for (const version of [250, 3, 307, 100, 101, 0, 199, 200]) {
    assert.equal(replay.textAt(version), texts[version], `version ${version}`);
  }
});

test("a session whose oldest versions are gone starts at firstVersion", () => {
  const items = [
    { type: "save", id: 1, version: 3, timestamp: at(0), snapshotId: "s" },
    change(5, 1, [{ from: 0, to: 0, insert: "x" }]),
    change(6, 2, [{ from: 1, to: 1, insert: "y" }]),
  ];
  const replay = new Replay({ firstVersion: 5, firstText: "x", language: "cpp", items });
  assert.deepEqual([replay.textAt(0), replay.textAt(1), replay.textAt(2), replay.textAt(3)], ["x", "x", "x", "xy"]);
  assert.equal(replay.languageAt(3), "cpp");
});

test("a timeline with a version missing is refused, not shown wrong", () => {
  const items = [change(1, 0, [{ from: 0, insert: "a" }]), change(3, 1, [{ from: 0, insert: "b" }])];
  assert.throws(() => new Replay({ firstVersion: 0, firstText: "", language: "python", items }), TimelineError);
});

test("playback waits the real time between items, idle gaps capped, divided by the speed", () => {
  const items = [
    change(1, 0, [{ from: 0, insert: "a" }]),
    change(2, 0.5, [{ from: 0, insert: "b" }]),
    change(3, 600, [{ from: 0, insert: "c" }]),
  ];
  const replay = new Replay({ firstVersion: 0, firstText: "", language: "python", items });
  assert.equal(replay.delayAfter(0, 1), 0);
  assert.equal(replay.delayAfter(1, 1), 500);
  assert.equal(replay.delayAfter(1, 4), 125);
  assert.equal(replay.delayAfter(2, 1), IDLE_CAP_MS);
  assert.equal(replay.delayAfter(2, 16), IDLE_CAP_MS / 16);
  assert.equal(replay.delayAfter(3, 1), null);
});

test("timestamps with microseconds or +00:00 parse", () => {
  const items = [
    { ...change(1, 0, [{ from: 0, insert: "a" }]), timestamp: "2026-12-04T18:00:00.123456+00:00" },
    { ...change(2, 0, [{ from: 0, insert: "b" }]), timestamp: "2026-12-04T18:00:00.623456Z" },
  ];
  const replay = new Replay({ firstVersion: 0, firstText: "", language: "python", items });
  assert.equal(replay.delayAfter(1, 1), 500);
});
