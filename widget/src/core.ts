// The widget's protocol logic with no I/O, mirroring the Rust client's
// `client/src/core.rs`: per-room cursors, the one outstanding pull
// per room, inline deltas, gap accounting, kicks.
//
// A `SessionCore` builds request frames (allocating request ids) and takes
// every server frame through `handle`, which says what to do: frames to send
// (automatic pulls), events for the panel, and replies for whoever waits on a
// request id. Nothing here reads a clock or touches a socket, so the unit
// tests drive it frame by frame.
//
// Cursors are only ever the ones the server handed out (`JoinAck.latest`,
// `Notify.latest` after an applied delta, `PullResult.cursor`, or the cursor
// a caller resumes from), so the server can count drops exactly.
// Deduplication uses a separate high-water mark of delivered `msg_id`s within
// the cursor's epoch: a message is delivered only if its id is above it.

import { create } from "@bufbuild/protobuf";
import {
  type ChatMessage,
  type ClientFrame,
  ClientFrameSchema,
  type ConnectAck,
  ConnectSchema,
  type Cursor,
  CursorSchema,
  type Delta,
  type Error as ServerError,
  type JoinAck,
  JoinSchema,
  KickReason,
  type Kicked,
  Lane,
  type Notify,
  PingSchema,
  type Pong,
  type PullResult,
  PullSchema,
  RefreshSchema,
  SendSchema,
  type ServerFrame,
} from "./gen/client_pb.js";

/** The request id of the Connect frame; the core's own ids start after it. */
export const CONNECT_REQUEST_ID = 1n;

/** What happened in a room, for the panel. */
export type CoreEvent =
  | { type: "message"; room: string; epoch: bigint; message: ChatMessage }
  /** Messages the client will never get: shed on purpose by the server. */
  | { type: "dropped"; room: string; normal: bigint; priority: bigint }
  /** The room's stream was rebuilt without its history (a new epoch). */
  | { type: "reset"; room: string }
  | { type: "members"; room: string; count: bigint }
  /** Removed from `room`, or (room `null`) the session is closing. */
  | { type: "kicked"; room: string | null; reason: KickReason; message: string }
  | { type: "error"; room: string | null; error: ServerError };

/** The answer to a request, for whoever waits on its id. */
export type Reply = {
  requestId: bigint;
  result: { ok: true; body: ServerFrame["body"] } | { ok: false; error: ServerError };
};

/** What `handle` decided. */
export type Output = {
  frames: ClientFrame[];
  events: CoreEvent[];
  replies: Reply[];
};

export function emptyOutput(): Output {
  return { frames: [], events: [], replies: [] };
}

/** How to join a room. */
export type JoinOptions = {
  /** Resume after this cursor (one the server handed out earlier). */
  since?: Cursor;
  /** How many recent messages a fresh joiner gets: 0 is the server default. */
  backfill?: number;
};

/** One joined room as this session sees it. */
class RoomFeed {
  /** Highest `msg_id` delivered in `cursor.epoch`; at least `cursor.msgId`. */
  seen: bigint;
  /** Request id of the automatic pull in flight. */
  pull: bigint | null = null;

  constructor(
    readonly name: string,
    /** Where the session is: always a cursor the server handed out. */
    public cursor: Cursor,
    /** The newest position the server announced. */
    public latest: Cursor,
    public memberCount: bigint,
  ) {
    this.seen = cursor.msgId;
  }

  behind(): boolean {
    return ahead(this.latest, this.cursor);
  }

  /** Remembers an announced position if it is newer (or of another epoch). */
  noteLatest(latest: Cursor): void {
    if (latest.epoch !== this.latest.epoch || latest.ts > this.latest.ts) {
      this.latest = latest;
    }
  }

  /** Moves to a cursor the server handed out. */
  advanceTo(cursor: Cursor): void {
    if (cursor.epoch !== this.cursor.epoch) {
      this.seen = cursor.msgId;
    } else if (cursor.msgId > this.seen) {
      this.seen = cursor.msgId;
    }
    this.cursor = cursor;
    this.noteLatest(cursor);
  }

  /** Delivers the messages of `epoch` above the high-water mark, oldest first. */
  deliver(messages: ChatMessage[], epoch: bigint, events: CoreEvent[]): void {
    for (const message of messages) {
      if (message.msgId <= this.seen) {
        continue;
      }
      this.seen = message.msgId;
      events.push({ type: "message", room: this.name, epoch, message });
    }
  }
}

/** Whether `latest` is past `cursor`: later in the same epoch, or another epoch. */
function ahead(latest: Cursor, cursor: Cursor): boolean {
  return latest.epoch !== cursor.epoch || latest.ts > cursor.ts;
}

/** What a request was, so its answer can be routed. */
type Pending =
  | { kind: "join"; room: string; since: Cursor | undefined }
  | { kind: "plain" }
  | { kind: "autoPull"; room: string };

/** One connection's protocol state. */
export class SessionCore {
  private readonly rooms = new Map<string, RoomFeed>();
  private readonly pending = new Map<bigint, Pending>();
  private lastRequestId = CONNECT_REQUEST_ID;

  /** `limit` of automatic pulls; 0 lets the server choose. */
  constructor(private readonly pullLimit = 0) {}

  /** The cursor of a joined room. */
  cursor(room: string): Cursor | undefined {
    return this.rooms.get(room)?.cursor;
  }

  /** The member count the server last reported for a joined room. */
  memberCount(room: string): bigint | undefined {
    return this.rooms.get(room)?.memberCount;
  }

  join(room: string, options: JoinOptions = {}): ClientFrame {
    const requestId = this.nextRequestId();
    this.pending.set(requestId, { kind: "join", room, since: options.since });
    return frame(requestId, {
      case: "join",
      value: create(JoinSchema, { roomId: room, since: options.since, backfill: options.backfill ?? 0 }),
    });
  }

  send(room: string, clientMsgId: bigint, kind: number, payload: Uint8Array): ClientFrame {
    return this.plainRequest({
      case: "send",
      value: create(SendSchema, { roomId: room, clientMsgId, kind, payload }),
    });
  }

  /** A Refresh: a newer token for the session's user, answered by a RefreshAck. */
  refresh(token: string): ClientFrame {
    return this.plainRequest({ case: "refresh", value: create(RefreshSchema, { token }) });
  }

  /** A Ping. Its Pong is handled whatever request id it carries. */
  ping(): ClientFrame {
    return frame(this.nextRequestId(), { case: "ping", value: create(PingSchema) });
  }

  /** Takes one server frame and appends what to do to `out`. */
  handle(serverFrame: ServerFrame, out: Output): void {
    const { requestId, body } = serverFrame;
    if (body.case === undefined) {
      return;
    }
    const pending = requestId !== 0n ? this.pending.get(requestId) : undefined;
    if (pending !== undefined) {
      this.pending.delete(requestId);
      this.onReply(requestId, pending, body, out);
      return;
    }
    switch (body.case) {
      case "notify":
        this.onNotify(body.value, out);
        break;
      case "pong":
        this.onPong(body.value, out);
        break;
      case "kicked":
        this.onKicked(body.value, out);
        break;
      case "error":
        out.events.push({ type: "error", room: null, error: body.value });
        break;
      default:
        // An answer nobody waits for (or a second ConnectAck): nothing to do.
        break;
    }
  }

  private nextRequestId(): bigint {
    this.lastRequestId += 1n;
    return this.lastRequestId;
  }

  private plainRequest(body: ClientFrame["body"]): ClientFrame {
    const requestId = this.nextRequestId();
    this.pending.set(requestId, { kind: "plain" });
    return frame(requestId, body);
  }

  private onReply(requestId: bigint, pending: Pending, body: ServerFrame["body"], out: Output): void {
    if (pending.kind === "autoPull") {
      this.onAutoPullReply(pending.room, requestId, body, out);
      return;
    }
    if (body.case === "error") {
      out.replies.push({ requestId, result: { ok: false, error: body.value } });
      return;
    }
    if (pending.kind === "join" && body.case === "joinAck") {
      this.onJoinAck(pending.room, pending.since, body.value, out);
    }
    out.replies.push({ requestId, result: { ok: true, body } });
  }

  private onJoinAck(room: string, since: Cursor | undefined, ack: JoinAck, out: Output): void {
    const latest = ack.latest ?? create(CursorSchema);
    const feed = new RoomFeed(room, latest, latest, ack.memberCount);
    feed.seen = 0n;
    if (since !== undefined && !ack.reset) {
      // Resume: what came after `since` arrives by deltas or pulls.
      feed.cursor = since;
      feed.seen = since.msgId;
      if (since.epoch === latest.epoch) {
        feed.deliver(ack.recent, latest.epoch, out.events);
      }
    } else {
      if (ack.reset) {
        out.events.push({ type: "reset", room });
      }
      feed.deliver(ack.recent, latest.epoch, out.events);
      if (latest.msgId > feed.seen) {
        feed.seen = latest.msgId;
      }
    }
    out.events.push({ type: "members", room, count: ack.memberCount });
    if (feed.behind()) {
      out.frames.push(this.startPull(feed));
    }
    this.rooms.set(room, feed);
  }

  private onNotify(notify: Notify, out: Output): void {
    const feed = this.rooms.get(notify.roomId);
    const latest = notify.latest;
    if (feed === undefined || latest === undefined) {
      return;
    }
    this.noteMembers(feed, notify.memberCount, out);
    feed.noteLatest(latest);
    // While a pull is in flight a delta is left alone: its drop counts could
    // overlap the pull's. The pull's answer is followed by another pull if
    // `latest` is still ahead.
    const delta = notify.delta;
    if (delta !== undefined && feed.pull === null && covers(delta, feed.cursor, latest)) {
      applyDelta(feed, latest, delta, out);
    } else if (feed.pull === null && feed.behind()) {
      out.frames.push(this.startPull(feed));
    }
  }

  private onAutoPullReply(room: string, requestId: bigint, body: ServerFrame["body"], out: Output): void {
    const feed = this.rooms.get(room);
    if (feed === undefined || feed.pull !== requestId) {
      // The room was left and joined again since: a stale answer.
      return;
    }
    feed.pull = null;
    if (body.case === "error") {
      out.events.push({ type: "error", room: feed.name, error: body.value });
      return;
    }
    if (body.case !== "pullResult") {
      return;
    }
    const result: PullResult = body.value;
    const before = feed.cursor;
    const cursor = result.cursor ?? before;
    if (result.reset || cursor.epoch !== before.epoch) {
      out.events.push({ type: "reset", room: feed.name });
      feed.seen = 0n;
    } else if (cursor.ts < before.ts) {
      // Never move back; deliver nothing older than what we have.
      return;
    }
    if (result.dropped > 0n || result.droppedPriority > 0n) {
      out.events.push({ type: "dropped", room: feed.name, normal: result.dropped, priority: result.droppedPriority });
    }
    feed.deliver(result.messages, cursor.epoch, out.events);
    feed.advanceTo(cursor);
    // Pull again only on progress: a server that keeps answering with the
    // same cursor must not make us spin.
    if ((result.more || feed.behind()) && !sameCursor(cursor, before)) {
      out.frames.push(this.startPull(feed));
    }
  }

  private onPong(pong: Pong, out: Output): void {
    for (const position of pong.rooms) {
      const feed = this.rooms.get(position.roomId);
      if (feed === undefined) {
        continue;
      }
      this.noteMembers(feed, position.memberCount, out);
      if (position.latest !== undefined) {
        feed.noteLatest(position.latest);
      }
      if (feed.pull === null && feed.behind()) {
        out.frames.push(this.startPull(feed));
      }
    }
  }

  private onKicked(kicked: Kicked, out: Output): void {
    let room: string | null = null;
    if (kicked.roomId !== "") {
      // The session is closing when the room is empty: the cursors stay, so
      // the caller can resume elsewhere.
      this.rooms.delete(kicked.roomId);
      room = kicked.roomId;
    }
    out.events.push({ type: "kicked", room, reason: kicked.reason, message: kicked.message });
  }

  private noteMembers(feed: RoomFeed, count: bigint, out: Output): void {
    if (count !== feed.memberCount) {
      feed.memberCount = count;
      out.events.push({ type: "members", room: feed.name, count });
    }
  }

  /** Marks `feed` as pulling and builds the Pull from its cursor. */
  private startPull(feed: RoomFeed): ClientFrame {
    const requestId = this.nextRequestId();
    feed.pull = requestId;
    this.pending.set(requestId, { kind: "autoPull", room: feed.name });
    return frame(requestId, {
      case: "pull",
      value: create(PullSchema, { roomId: feed.name, since: feed.cursor, limit: this.pullLimit }),
    });
  }
}

/**
 * Whether a Notify's delta can be applied at `cursor`: all three positions
 * share an epoch and `since.ts <= cursor.ts < latest.ts`.
 */
function covers(delta: Delta, cursor: Cursor, latest: Cursor): boolean {
  const since = delta.since;
  return (
    since !== undefined &&
    since.epoch === cursor.epoch &&
    latest.epoch === cursor.epoch &&
    since.ts <= cursor.ts &&
    cursor.ts < latest.ts
  );
}

/** Applies a delta that `covers` the session's cursor. */
function applyDelta(feed: RoomFeed, latest: Cursor, delta: Delta, out: Output): void {
  const cursor = feed.cursor;
  const since = delta.since ?? cursor;
  let normal = delta.dropped;
  let priority = delta.droppedPriority;
  if (since.ts !== cursor.ts) {
    // The delta starts before our cursor: its drop counts may include gaps we
    // have already passed. Count what the stream held between our cursor and
    // `latest` minus what we got, never more than the server's figures.
    const fresh = delta.messages.filter((m) => m.msgId > feed.seen);
    const normalNew = BigInt(fresh.filter((m) => m.lane !== Lane.PRIORITY).length);
    const priorityNew = BigInt(fresh.length) - normalNew;
    const normalHeld = saturatingSub(latest.normalSeq, cursor.normalSeq);
    const priorityHeld = saturatingSub(saturatingSub(latest.msgId, cursor.msgId), normalHeld);
    normal = min(saturatingSub(normalHeld, normalNew), delta.dropped);
    priority = min(saturatingSub(priorityHeld, priorityNew), delta.droppedPriority);
  }
  if (normal > 0n || priority > 0n) {
    out.events.push({ type: "dropped", room: feed.name, normal, priority });
  }
  feed.deliver(delta.messages, latest.epoch, out.events);
  feed.advanceTo(latest);
}

function saturatingSub(a: bigint, b: bigint): bigint {
  return a > b ? a - b : 0n;
}

function min(a: bigint, b: bigint): bigint {
  return a < b ? a : b;
}

function sameCursor(a: Cursor, b: Cursor): boolean {
  return a.epoch === b.epoch && a.ts === b.ts && a.msgId === b.msgId && a.normalSeq === b.normalSeq;
}

function frame(requestId: bigint, body: ClientFrame["body"]): ClientFrame {
  return create(ClientFrameSchema, { requestId, body });
}

/** The first frame of every connection. */
export function connectFrame(token: string, deviceId: string): ClientFrame {
  return frame(CONNECT_REQUEST_ID, {
    case: "connect",
    value: create(ConnectSchema, { token, deviceId }),
  });
}

/** How the server answered Connect. */
export type Handshake =
  | { kind: "accepted"; ack: ConnectAck }
  | { kind: "redirect"; url: string }
  | { kind: "refused"; error: ServerError }
  | { kind: "protocol"; message: string };

/** Reads the server's answer to Connect. */
export function handshakeReply(serverFrame: ServerFrame): Handshake {
  const body = serverFrame.body;
  switch (body.case) {
    case "connectAck":
      return { kind: "accepted", ack: body.value };
    case "redirect":
      return body.value.url !== ""
        ? { kind: "redirect", url: body.value.url }
        : { kind: "protocol", message: "redirect without a url" };
    case "error":
      return { kind: "refused", error: body.value };
    default:
      return { kind: "protocol", message: `expected connect_ack, got ${body.case ?? "an empty frame"}` };
  }
}

export { KickReason };
