// The socket side of one room: connecting (following redirects), the
// handshake, the heartbeat, reconnecting with backoff and resuming by cursor,
// and the sends waiting for their acks. The protocol decisions are the
// `SessionCore`'s; this file only moves frames and keeps time.

import { fromBinary, toBinary } from "@bufbuild/protobuf";
import {
  type ClientFrame,
  ClientFrameSchema,
  type Cursor,
  ErrorCode,
  type Error as ServerError,
  Kind,
  type RoomLimits,
  type SendAck,
  ServerFrameSchema,
} from "./gen/client_pb.js";
import { type CoreEvent, connectFrame, emptyOutput, handshakeReply, KickReason, type Output, SessionCore } from "./core.js";

/** Redirects followed on one attempt before giving up. */
const MAX_REDIRECTS = 3;
/** How long connecting may take, redirects and the join included. */
const CONNECT_TIMEOUT_MS = 10_000;
/** Heartbeat used if the server announces none. */
const DEFAULT_HEARTBEAT_MS = 10_000;
/** Silent heartbeat intervals after which the server is taken for gone. */
const SILENT_INTERVALS = 3;
/** Reconnect backoff: the first delay and the cap (jitter takes up to half off). */
const BACKOFF_FIRST_MS = 500;
const BACKOFF_MAX_MS = 10_000;
/** Sends written and not yet answered; the server refuses a 65th (OVERLOADED). */
const SEND_WINDOW = 32;
/** Sends waiting (written or not); past it a send is refused at once. */
const MAX_WAITING_SENDS = 4096;
/** Longest a token is refreshed ahead of its expiry. */
const REFRESH_AHEAD_MS = 60_000;

export type ConnState = "connecting" | "live" | "reconnecting" | "stopped";

/** A change of connection state, with a reason for people. */
export type StateChange = {
  state: ConnState;
  /** Why (for `reconnecting` and `stopped`); empty otherwise. */
  reason: string;
  /** When the next attempt starts (`reconnecting`). */
  retryInMs?: number;
};

/** Fetches a fresh token from the app's backend. */
export type TokenProvider = () => Promise<string>;

export type RoomClientOptions = {
  /** `ws://host:port/ws` (or `wss://…`) of any msg-svc node. */
  server: string;
  token: string;
  /**
   * Fresh tokens before the current one expires: with one, the session is
   * refreshed in-band ahead of the expiry (about a minute, or halfway
   * through a short token's life) and never closed for it, and a
   * reconnect after an expiry fetches a new token first.
   */
  tokenProvider?: TokenProvider;
  room: string;
  deviceId: string;
  /** Recent messages a fresh joiner gets; 0 is the server's default. */
  backfill: number;
};

export type RoomClientHandlers = {
  event(event: CoreEvent): void;
  state(change: StateChange): void;
};

/** A send the server (or the client, before sending) refused. */
export class SendError extends Error {
  constructor(
    readonly code: ErrorCode,
    readonly serverMessage: string,
    readonly retryAfterMs: number,
  ) {
    super(serverMessage === "" ? ErrorCode[code] : `${ErrorCode[code]}: ${serverMessage}`);
    this.name = "SendError";
  }

  static of(error: ServerError): SendError {
    return new SendError(error.code, error.message, error.retryAfterMs);
  }
}

type PendingSend = {
  clientMsgId: bigint;
  payload: Uint8Array;
  /** The request carrying it on the current connection, once written. */
  requestId: bigint | null;
  resolve(ack: SendAck): void;
  reject(error: SendError): void;
};

/** One connection attempt's socket and protocol state. */
type Attempt = {
  socket: WebSocket;
  core: SessionCore | null;
  /** The Join's request id, until its answer. */
  joinRequest: bigint | null;
  heartbeatMs: number;
  lastHeard: number;
  /** Gives up on an attempt that is not live in time. */
  connectTimer: number;
  heartbeatTimer: number;
  /** Refreshes the token ahead of its expiry. */
  refreshTimer: number;
  /** The Refresh's request id, until its answer. */
  refreshRequest: bigint | null;
};

/** Keeps one room joined over WebSocket for as long as it is not stopped. */
export class RoomClient {
  private attempt: Attempt | null = null;
  /** Where the room's stream was when the last connection ended. */
  private cursor: Cursor | undefined;
  private failures = 0;
  private retryTimer: number | undefined;
  private stopped = false;
  /** Sends not yet answered, oldest first; the first `inFlight` are written. */
  private readonly outbox: PendingSend[] = [];
  private inFlight = 0;
  private nextClientMsgId: bigint;
  /** When the session's token expires (ms since the Unix epoch; 0: unknown). */
  tokenExpiresAtMs = 0;
  userId = "";
  limits: RoomLimits | undefined;

  constructor(
    private options: RoomClientOptions,
    private readonly handlers: RoomClientHandlers,
  ) {
    // Random high bits: another tab of the same user never reuses an id,
    // which the server would take for a retry.
    const high = BigInt(Math.floor(Math.random() * 0x7fffffff));
    this.nextClientMsgId = (high << 32n) | 1n;
  }

  start(): void {
    this.open(this.options.server, 0, "connecting");
  }

  /** New credentials or server: reconnects at once, resuming where it was. */
  reconnectWith(options: RoomClientOptions): void {
    this.options = options;
    if (this.stopped) {
      this.stopped = false;
      this.failures = 0;
    }
    this.closeAttempt();
    window.clearTimeout(this.retryTimer);
    this.open(options.server, 0, "connecting");
  }

  /** Closes the connection for good; queued sends are refused. */
  stop(reason: string): void {
    if (this.stopped) {
      return;
    }
    this.stopped = true;
    window.clearTimeout(this.retryTimer);
    this.closeAttempt();
    for (const pending of this.outbox.splice(0)) {
      pending.reject(new SendError(ErrorCode.UNSPECIFIED, "not connected", 0));
    }
    this.handlers.state({ state: "stopped", reason });
  }

  /** Sends a chat message; resolves with the server's ack. */
  send(text: string): Promise<SendAck> {
    const payload = new TextEncoder().encode(text);
    const max = this.limits?.maxPayloadBytes ?? 0;
    if (max > 0 && payload.length > max) {
      return Promise.reject(
        new SendError(ErrorCode.PAYLOAD_TOO_LARGE, `at most ${max} bytes, this is ${payload.length}`, 0),
      );
    }
    if (this.stopped) {
      return Promise.reject(new SendError(ErrorCode.UNSPECIFIED, "not connected", 0));
    }
    if (this.outbox.length >= MAX_WAITING_SENDS) {
      return Promise.reject(new SendError(ErrorCode.OVERLOADED, `${MAX_WAITING_SENDS} messages are waiting already`, 0));
    }
    return new Promise<SendAck>((resolve, reject) => {
      this.outbox.push({ clientMsgId: this.nextClientMsgId, payload, requestId: null, resolve, reject });
      this.nextClientMsgId += 1n;
      this.pump();
    });
  }

  private open(url: string, redirects: number, state: ConnState): void {
    this.handlers.state({ state, reason: "" });
    let socket: WebSocket;
    try {
      socket = new WebSocket(url);
    } catch (error) {
      this.stop(`bad server address ${url}: ${String(error)}`);
      return;
    }
    socket.binaryType = "arraybuffer";
    const attempt: Attempt = {
      socket,
      core: null,
      joinRequest: null,
      heartbeatMs: DEFAULT_HEARTBEAT_MS,
      lastHeard: Date.now(),
      connectTimer: 0,
      heartbeatTimer: 0,
      refreshTimer: 0,
      refreshRequest: null,
    };
    this.attempt = attempt;
    attempt.connectTimer = window.setTimeout(() => this.fail(attempt, "the server did not answer in time"), CONNECT_TIMEOUT_MS);
    socket.onopen = () => {
      this.writeFrame(attempt, connectFrame(this.options.token, this.options.deviceId));
    };
    socket.onmessage = (message: MessageEvent) => {
      if (this.attempt !== attempt || !(message.data instanceof ArrayBuffer)) {
        return;
      }
      attempt.lastHeard = Date.now();
      let frame;
      try {
        frame = fromBinary(ServerFrameSchema, new Uint8Array(message.data));
      } catch {
        this.fail(attempt, "the server sent a frame this client cannot read");
        return;
      }
      if (attempt.core === null) {
        this.onHandshake(attempt, frame, redirects);
      } else {
        const out = emptyOutput();
        attempt.core.handle(frame, out);
        this.apply(attempt, out);
      }
    };
    socket.onclose = (close: CloseEvent) => {
      const why = close.reason !== "" ? close.reason : `connection closed (${close.code})`;
      this.fail(attempt, why);
    };
  }

  private onHandshake(attempt: Attempt, frame: Parameters<typeof handshakeReply>[0], redirects: number): void {
    const reply = handshakeReply(frame);
    switch (reply.kind) {
      case "accepted": {
        this.userId = reply.ack.userId;
        this.tokenExpiresAtMs = Number(reply.ack.tokenExpiresAtMs);
        this.scheduleRefresh(attempt);
        attempt.heartbeatMs = reply.ack.heartbeatMs > 0 ? reply.ack.heartbeatMs : DEFAULT_HEARTBEAT_MS;
        attempt.core = new SessionCore();
        const join = attempt.core.join(this.options.room, { since: this.cursor, backfill: this.options.backfill });
        attempt.joinRequest = join.requestId;
        this.writeFrame(attempt, join);
        attempt.heartbeatTimer = window.setInterval(() => this.heartbeat(attempt), attempt.heartbeatMs);
        return;
      }
      case "redirect":
        if (redirects >= MAX_REDIRECTS) {
          this.fail(attempt, `more than ${MAX_REDIRECTS} redirects`);
        } else {
          this.closeAttempt();
          this.open(reply.url, redirects + 1, this.failures === 0 ? "connecting" : "reconnecting");
        }
        return;
      case "refused":
        if (reply.error.code === ErrorCode.UNAUTHENTICATED || reply.error.code === ErrorCode.BAD_REQUEST) {
          this.stop(`the server refused the session: ${describeError(reply.error)}`);
        } else {
          this.fail(attempt, describeError(reply.error), reply.error.retryAfterMs);
        }
        return;
      case "protocol":
        this.fail(attempt, reply.message);
        return;
    }
  }

  /** Carries out what the core decided. */
  private apply(attempt: Attempt, out: Output): void {
    for (const frame of out.frames) {
      this.writeFrame(attempt, frame);
    }
    for (const reply of out.replies) {
      if (reply.requestId === attempt.refreshRequest) {
        attempt.refreshRequest = null;
        this.onRefreshed(attempt, reply.result);
        continue;
      }
      if (reply.requestId === attempt.joinRequest) {
        attempt.joinRequest = null;
        if (!reply.result.ok) {
          this.onJoinRefused(attempt, reply.result.error);
          return;
        }
        if (reply.result.body.case === "joinAck") {
          this.limits = reply.result.body.value.limits;
        }
        this.onJoined(attempt);
        continue;
      }
      const index = this.outbox.findIndex((pending) => pending.requestId === reply.requestId);
      if (index < 0) {
        continue;
      }
      const [pending] = this.outbox.splice(index, 1);
      this.inFlight -= 1;
      if (!reply.result.ok) {
        pending.reject(SendError.of(reply.result.error));
      } else if (reply.result.body.case === "sendAck") {
        pending.resolve(reply.result.body.value);
      } else {
        pending.reject(new SendError(ErrorCode.INTERNAL, `unexpected answer ${reply.result.body.case}`, 0));
      }
    }
    this.pump();
    this.cursor = attempt.core?.cursor(this.options.room) ?? this.cursor;
    for (const event of out.events) {
      this.handlers.event(event);
      if (event.type === "kicked") {
        this.onKicked(attempt, event.room, event.reason, event.message);
      }
      if (this.attempt !== attempt) {
        return;
      }
    }
  }

  private onJoined(attempt: Attempt): void {
    window.clearTimeout(attempt.connectTimer);
    this.failures = 0;
    this.handlers.state({ state: "live", reason: "" });
    // Sends cut off by the last disconnect go again with their ids, so the
    // server answers a retry of one it already took with the same ack.
    this.pump();
    this.cursor = attempt.core?.cursor(this.options.room) ?? this.cursor;
  }

  private onJoinRefused(attempt: Attempt, error: ServerError): void {
    const why = describeError(error);
    if (error.code === ErrorCode.BANNED || error.code === ErrorCode.FORBIDDEN || error.code === ErrorCode.BAD_REQUEST) {
      this.stop(`cannot join ${this.options.room}: ${why}`);
    } else {
      this.fail(attempt, `cannot join ${this.options.room}: ${why}`, error.retryAfterMs);
    }
  }

  /** Arms the refresh of the token ahead of its expiry, if a provider can give one. */
  private scheduleRefresh(attempt: Attempt): void {
    window.clearTimeout(attempt.refreshTimer);
    if (this.options.tokenProvider === undefined || this.tokenExpiresAtMs === 0) {
      return;
    }
    const left = Math.max(0, this.tokenExpiresAtMs - Date.now());
    const delay = left - Math.min(REFRESH_AHEAD_MS, left / 2);
    attempt.refreshTimer = window.setTimeout(() => void this.refresh(attempt), delay);
  }

  /** Fetches a token and hands it to the server; a failure is tried again while time is left. */
  private async refresh(attempt: Attempt): Promise<void> {
    const provider = this.options.tokenProvider;
    if (provider === undefined || this.attempt !== attempt || attempt.core === null) {
      return;
    }
    let token: string;
    try {
      token = await provider();
    } catch (error) {
      this.retryRefresh(attempt, `no new token: ${String(error)}`);
      return;
    }
    if (this.attempt !== attempt || attempt.core === null) {
      return;
    }
    this.options = { ...this.options, token };
    const frame = attempt.core.refresh(token);
    attempt.refreshRequest = frame.requestId;
    this.writeFrame(attempt, frame);
  }

  private onRefreshed(attempt: Attempt, result: Output["replies"][number]["result"]): void {
    if (!result.ok) {
      this.retryRefresh(attempt, describeError(result.error));
      return;
    }
    if (result.body.case === "refreshAck") {
      this.tokenExpiresAtMs = Number(result.body.value.tokenExpiresAtMs);
    }
    this.scheduleRefresh(attempt);
  }

  private retryRefresh(attempt: Attempt, why: string): void {
    console.warn(`chatroom: token refresh failed (${why}); trying again`);
    const left = Math.max(0, this.tokenExpiresAtMs - Date.now());
    attempt.refreshTimer = window.setTimeout(() => void this.refresh(attempt), Math.min(5_000, Math.max(100, left / 4)));
  }

  private onKicked(attempt: Attempt, room: string | null, reason: KickReason, message: string): void {
    const why = kickText(reason, message);
    if (reason === KickReason.TOKEN_EXPIRED && this.options.tokenProvider !== undefined) {
      // The next attempt fetches a new token first.
      this.fail(attempt, why);
      return;
    }
    if (
      reason === KickReason.BANNED ||
      reason === KickReason.REPLACED ||
      reason === KickReason.ROOM_CLOSED ||
      reason === KickReason.TOKEN_EXPIRED
    ) {
      this.stop(room === null ? why : `removed from ${room}: ${why}`);
    } else {
      this.fail(attempt, why);
    }
  }

  private heartbeat(attempt: Attempt): void {
    if (Date.now() - attempt.lastHeard > SILENT_INTERVALS * attempt.heartbeatMs) {
      this.fail(attempt, "the server went silent");
    } else if (attempt.core !== null) {
      this.writeFrame(attempt, attempt.core.ping());
    }
  }

  /** Writes waiting sends, oldest first, while the live connection's window has room. */
  private pump(): void {
    const attempt = this.attempt;
    if (attempt === null || attempt.core === null || attempt.joinRequest !== null) {
      return;
    }
    for (const pending of this.outbox) {
      if (this.inFlight >= SEND_WINDOW) {
        break;
      }
      if (pending.requestId === null) {
        const frame = attempt.core.send(this.options.room, pending.clientMsgId, Kind.CHAT, pending.payload);
        pending.requestId = frame.requestId;
        this.inFlight += 1;
        this.writeFrame(attempt, frame);
      }
    }
  }

  private writeFrame(attempt: Attempt, frame: ClientFrame): void {
    if (attempt.socket.readyState === WebSocket.OPEN) {
      // `toBinary` writes into a fresh ArrayBuffer, never a shared one.
      attempt.socket.send(toBinary(ClientFrameSchema, frame) as Uint8Array<ArrayBuffer>);
    }
  }

  /** Ends `attempt` (if it is the current one) and schedules the next. */
  private fail(attempt: Attempt, reason: string, retryAfterMs = 0): void {
    if (this.attempt !== attempt || this.stopped) {
      return;
    }
    this.closeAttempt();
    const base = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** this.failures);
    const delay = Math.max(retryAfterMs, base / 2 + (Math.random() * base) / 2);
    this.failures += 1;
    this.handlers.state({ state: "reconnecting", reason, retryInMs: delay });
    this.retryTimer = window.setTimeout(() => void this.reopen(), delay);
  }

  /** Opens the next attempt, with a fresh token first when the current one has expired. */
  private async reopen(): Promise<void> {
    const provider = this.options.tokenProvider;
    if (provider !== undefined && this.tokenExpiresAtMs !== 0 && this.tokenExpiresAtMs <= Date.now()) {
      try {
        this.options = { ...this.options, token: await provider() };
      } catch (error) {
        this.stop(`the token expired and no new one could be had: ${String(error)}`);
        return;
      }
    }
    if (!this.stopped) {
      this.open(this.options.server, 0, "reconnecting");
    }
  }

  private closeAttempt(): void {
    const attempt = this.attempt;
    if (attempt === null) {
      return;
    }
    this.attempt = null;
    window.clearTimeout(attempt.connectTimer);
    window.clearInterval(attempt.heartbeatTimer);
    window.clearTimeout(attempt.refreshTimer);
    if (attempt.core !== null) {
      this.cursor = attempt.core.cursor(this.options.room) ?? this.cursor;
    }
    for (const pending of this.outbox) {
      pending.requestId = null;
    }
    this.inFlight = 0;
    attempt.socket.onopen = null;
    attempt.socket.onmessage = null;
    attempt.socket.onclose = null;
    attempt.socket.close(1000);
  }
}

/** A server error for people: `rate limited (…)`. */
export function describeError(error: ServerError): string {
  const name = (ErrorCode[error.code] ?? `error ${error.code}`).toLowerCase().replaceAll("_", " ");
  return error.message === "" ? name : `${name} (${error.message})`;
}

function kickText(reason: KickReason, message: string): string {
  const why: Record<KickReason, string> = {
    [KickReason.UNSPECIFIED]: "no reason given",
    [KickReason.SLOW_CONSUMER]: "too slow to keep up",
    [KickReason.BANNED]: "you are banned",
    [KickReason.REPLACED]: "replaced by a newer session on the same device",
    [KickReason.HEARTBEAT_TIMEOUT]: "heartbeat timeout",
    [KickReason.ROOM_CLOSED]: "the room was closed",
    [KickReason.SHUTDOWN]: "the server is restarting",
    [KickReason.PROTOCOL]: "protocol violation",
    [KickReason.TOKEN_EXPIRED]: "your session's token expired",
  };
  const text = why[reason] ?? `kicked (${reason})`;
  return message === "" ? text : `${text} (${message})`;
}
