// The widget's protocol core (src/core.ts) driven frame by frame, as the Rust
// client's core is in client/src/core/tests.rs. esbuild compiles it
// (with the generated protobuf code) for Node first.
//
// The streams here are simple: message `n` has `msgId = n`, `ts = 100 n` and
// is NORMAL unless a test says otherwise, so `at(n)` is the cursor after it.

import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { before, test } from "node:test";
import { pathToFileURL } from "node:url";
import * as esbuild from "esbuild";
import { artifacts } from "./support.mjs";

const ROOM = "demo";
const EPOCH = 7n;
let P;

before(async () => {
  mkdirSync(artifacts, { recursive: true });
  const outfile = join(artifacts, "core.mjs");
  await esbuild.build({
    stdin: {
      contents: `export * from "./src/core.ts"; export * from "./src/gen/client_pb.ts"; export { create } from "@bufbuild/protobuf";`,
      resolveDir: join(artifacts, ".."),
      loader: "ts",
    },
    bundle: true,
    format: "esm",
    platform: "neutral",
    outfile,
    logLevel: "warning",
  });
  P = await import(pathToFileURL(outfile).href);
});

const at = (n, epoch = EPOCH) =>
  P.create(P.CursorSchema, { epoch, ts: 100n * BigInt(n), msgId: BigInt(n), normalSeq: BigInt(n) });

const msg = (n, lane = P.Lane.NORMAL) =>
  P.create(P.ChatMessageSchema, {
    msgId: BigInt(n),
    ts: 100n * BigInt(n),
    normalSeq: BigInt(n),
    sender: "alice",
    lane,
    payload: new TextEncoder().encode(`m${n}`),
  });

const msgs = (from, to) => Array.from({ length: to - from + 1 }, (_, i) => msg(from + i));

const frame = (requestId, body) => P.create(P.ServerFrameSchema, { requestId, body });

function handle(core, serverFrame) {
  const out = P.emptyOutput();
  core.handle(serverFrame, out);
  return out;
}

const joinAck = (latest, recent = [], reset = false) => ({
  case: "joinAck",
  value: P.create(P.JoinAckSchema, { roomId: ROOM, latest, memberCount: 3n, recent, reset }),
});

const notify = (latest, delta) => frame(0n, { case: "notify", value: P.create(P.NotifySchema, { roomId: ROOM, latest, delta, memberCount: 4n }) });

const delta = (since, messages, dropped = 0n) => P.create(P.DeltaSchema, { since, messages, dropped });

const pullResult = (cursor, messages, { more = false, dropped = 0n, reset = false } = {}) => ({
  case: "pullResult",
  value: P.create(P.PullResultSchema, { roomId: ROOM, messages, cursor, more, dropped, reset }),
});

/** The Pulls in `out`: `[requestId, since]`. */
const pulls = (out) => out.frames.filter((f) => f.body.case === "pull").map((f) => [f.requestId, f.body.value.since]);
const delivered = (out) => out.events.filter((e) => e.type === "message").map((e) => Number(e.message.msgId));
const drops = (out) => out.events.filter((e) => e.type === "dropped").map((e) => [Number(e.normal), Number(e.priority)]);
const resets = (out) => out.events.filter((e) => e.type === "reset").length;

/** A core joined to ROOM with its cursor at `at(n)`. */
function joinedAt(n) {
  const core = new P.SessionCore();
  const join = core.join(ROOM);
  const out = handle(core, frame(join.requestId, joinAck(at(n))));
  assert.deepEqual(pulls(out), []);
  return core;
}

test("a fresh join shows the backfill and starts from the room's newest position", () => {
  const core = new P.SessionCore();
  const join = core.join(ROOM, { backfill: 3 });
  assert.equal(join.body.value.backfill, 3);
  assert.equal(join.body.value.since, undefined);
  const out = handle(core, frame(join.requestId, joinAck(at(5), msgs(3, 5))));
  assert.deepEqual(delivered(out), [3, 4, 5]);
  assert.equal(out.replies.length, 1);
  assert.equal(core.cursor(ROOM).msgId, 5n);
  assert.equal(core.memberCount(ROOM), 3n);
});

test("an inline delta is applied without a pull; one that overlaps delivers nothing twice", () => {
  const core = joinedAt(5);
  let out = handle(core, notify(at(7), delta(at(5), msgs(6, 7))));
  assert.deepEqual(pulls(out), []);
  assert.deepEqual(delivered(out), [6, 7]);
  assert.equal(core.cursor(ROOM).msgId, 7n);
  // Starts before the cursor: 6 and 7 are not shown again.
  out = handle(core, notify(at(8), delta(at(5), msgs(6, 8))));
  assert.deepEqual(delivered(out), [8]);
  assert.deepEqual(drops(out), []);
});

test("a plain notify makes one pull, followed while `more` says so; drops are reported", () => {
  const core = joinedAt(5);
  let out = handle(core, notify(at(500)));
  const [[first, since]] = pulls(out);
  assert.equal(since.msgId, 5n);
  // A second notify while pulling starts no second pull.
  assert.deepEqual(pulls(handle(core, notify(at(600)))), []);
  out = handle(core, frame(first, pullResult(at(300), msgs(250, 300), { more: true, dropped: 244n })));
  assert.deepEqual(drops(out), [[244, 0]]);
  assert.equal(delivered(out).length, 51);
  const [[second, from]] = pulls(out);
  assert.equal(from.msgId, 300n);
  out = handle(core, frame(second, pullResult(at(600), msgs(299, 600))));
  assert.equal(delivered(out)[0], 301, "299 and 300 are not shown again");
  assert.deepEqual(pulls(out), []);
});

test("resuming by cursor pulls what was missed and nothing before it", () => {
  const core = new P.SessionCore();
  const join = core.join(ROOM, { since: at(5) });
  assert.equal(join.body.value.since.msgId, 5n);
  let out = handle(core, frame(join.requestId, joinAck(at(9))));
  assert.equal(resets(out), 0);
  const [[request, since]] = pulls(out);
  assert.equal(since.msgId, 5n);
  out = handle(core, frame(request, pullResult(at(9), msgs(4, 9))));
  assert.deepEqual(delivered(out), [6, 7, 8, 9]);
});

test("a cursor of another epoch is reset: the new stream shows even with lower ids", () => {
  const core = new P.SessionCore();
  const join = core.join(ROOM, { since: at(50) });
  const out = handle(core, frame(join.requestId, joinAck(at(2, 8n), msgs(1, 2), true)));
  assert.equal(resets(out), 1);
  assert.deepEqual(delivered(out), [1, 2]);
  assert.equal(core.cursor(ROOM).epoch, 8n);
  const events = out.events.filter((e) => e.type === "message");
  assert.deepEqual(events.map((e) => e.epoch), [8n, 8n]);
});

test("a pull answered across an epoch change reports the reset and delivers the new stream", () => {
  const core = joinedAt(40);
  const [[request]] = pulls(handle(core, notify(at(3, 9n))));
  const out = handle(core, frame(request, pullResult(at(3, 9n), msgs(1, 3), { reset: true })));
  assert.equal(resets(out), 1);
  assert.deepEqual(delivered(out), [1, 2, 3]);
});

test("a delta that starts before the cursor counts only the gap after it", () => {
  const core = joinedAt(10);
  // The server shed 5 normal messages after since=at(4); of the 6 the stream
  // held after our cursor (11..16) the delta carries 14..16: 3 skipped for us.
  const out = handle(core, notify(at(16), delta(at(4), msgs(14, 16), 5n)));
  assert.deepEqual(drops(out), [[3, 0]]);
  assert.deepEqual(delivered(out), [14, 15, 16]);
});

test("a pong ahead of the cursor makes a pull; a delta during a pull waits for it", () => {
  const core = joinedAt(5);
  const pong = frame(9n, {
    case: "pong",
    value: P.create(P.PongSchema, { rooms: [{ roomId: ROOM, latest: at(8), memberCount: 2n }] }),
  });
  let out = handle(core, pong);
  assert.equal(pulls(out).length, 1);
  assert.deepEqual(out.events.filter((e) => e.type === "members").map((e) => e.count), [2n]);
  out = handle(core, notify(at(9), delta(at(5), msgs(6, 9))));
  assert.deepEqual(delivered(out), [], "the pull in flight answers for it");
});

test("kicks are reported with their reason; a closing session keeps its cursor", () => {
  const core = joinedAt(5);
  let out = handle(core, frame(0n, { case: "kicked", value: P.create(P.KickedSchema, { roomId: "", reason: P.KickReason.SHUTDOWN }) }));
  assert.deepEqual(out.events.map((e) => [e.type, e.room, e.reason]), [["kicked", null, P.KickReason.SHUTDOWN]]);
  assert.equal(core.cursor(ROOM).msgId, 5n);
  out = handle(core, frame(0n, { case: "kicked", value: P.create(P.KickedSchema, { roomId: ROOM, reason: P.KickReason.BANNED }) }));
  assert.deepEqual(out.events.map((e) => [e.type, e.room, e.reason]), [["kicked", ROOM, P.KickReason.BANNED]]);
  assert.equal(core.cursor(ROOM), undefined);
});

test("the handshake reads an ack, a redirect or a refusal", () => {
  const ack = P.handshakeReply(frame(1n, { case: "connectAck", value: P.create(P.ConnectAckSchema, { heartbeatMs: 1000 }) }));
  assert.equal(ack.kind, "accepted");
  const redirect = P.handshakeReply(frame(1n, { case: "redirect", value: P.create(P.RedirectSchema, { url: "ws://b/ws" }) }));
  assert.deepEqual(redirect, { kind: "redirect", url: "ws://b/ws" });
  const refused = P.handshakeReply(frame(1n, { case: "error", value: P.create(P.ErrorSchema, { code: P.ErrorCode.UNAUTHENTICATED }) }));
  assert.equal(refused.kind, "refused");
  assert.equal(P.handshakeReply(frame(1n, { case: "pong", value: P.create(P.PongSchema) })).kind, "protocol");
});

test("a refresh carries the new token and its answer, ack or refusal, goes to its caller", () => {
  const core = joinedAt(5);
  const request = core.refresh("new-token");
  assert.equal(request.body.case, "refresh");
  assert.equal(request.body.value.token, "new-token");
  let out = handle(
    core,
    frame(request.requestId, { case: "refreshAck", value: P.create(P.RefreshAckSchema, { tokenExpiresAtMs: 1234n }) }),
  );
  assert.equal(out.replies.length, 1);
  assert.equal(out.replies[0].requestId, request.requestId);
  assert.equal(out.replies[0].result.body.value.tokenExpiresAtMs, 1234n);
  const refused = core.refresh("someone-else");
  out = handle(core, frame(refused.requestId, { case: "error", value: P.create(P.ErrorSchema, { code: P.ErrorCode.FORBIDDEN }) }));
  assert.equal(out.replies[0].result.ok, false);
  assert.equal(out.replies[0].result.error.code, P.ErrorCode.FORBIDDEN);
  assert.equal(core.cursor(ROOM).msgId, 5n, "a refresh leaves the room alone");
});
