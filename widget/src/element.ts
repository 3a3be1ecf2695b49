// `<chatroom-widget server=… room=… token=…>`: the chat panel. It owns a
// `RoomClient` while it is on the page and renders what the client reports.
//
// Everything a server or another user sent is put on the page through
// `textContent`, never as markup. Messages are rendered in batches, once per
// animation frame, and the list never holds more than `max-messages` entries:
// a flood costs at most that many new nodes per frame however many messages
// arrive.

import { type ChatMessage, ErrorCode, Kind, Lane } from "./gen/client_pb.js";
import type { CoreEvent } from "./core.js";
import {
  type ConnState,
  RoomClient,
  SendError,
  type StateChange,
  type TokenProvider,
  describeError,
} from "./connection.js";
import { STYLES } from "./styles.js";

const DEFAULT_MAX_MESSAGES = 300;
/** Notices shown in the pinned strip, newest first. */
const MAX_PINNED = 3;
/** How long a refusal stays under the list. */
const FEEDBACK_MS = 8_000;
const DEVICE_KEY = "chatroom-widget:device-id";

const TEMPLATE = `
<style>${STYLES}</style>
<header class="head" part="header">
  <span class="room"></span>
  <span class="online"></span>
  <span class="conn"></span>
</header>
<div class="pinned" part="pinned" role="region" aria-label="Pinned notices" hidden></div>
<ol class="log" part="log" role="log" aria-live="polite" aria-relevant="additions" aria-label="Chat messages" tabindex="0"></ol>
<p class="feedback" part="feedback" role="status" aria-live="polite"></p>
<form class="compose" part="compose">
  <label class="visually-hidden" for="input">Message</label>
  <input id="input" type="text" autocomplete="off" enterkeyhint="send" placeholder="Say something…">
  <button type="submit">Send</button>
</form>
`;

/** A message as the `chatroom:message` event and the list show it. */
export type MessageDetail = {
  room: string;
  /** The room stream's epoch and the message's id in it, as decimal strings. */
  epoch: string;
  msgId: string;
  /** Microseconds since the Unix epoch (room clock). */
  ts: number;
  sender: string;
  /** How the app's backend describes the sender (from their token); absent if it does not. */
  senderInfo?: { name: string; badges: string[]; color: string };
  /** The payload as text (invalid UTF-8 replaced with U+FFFD). */
  text: string;
  priority: boolean;
  kind: number;
};

type Item =
  | { kind: "message"; detail: MessageDetail; own: boolean }
  | { kind: "marker"; className: string; text: string };

export class ChatroomWidget extends HTMLElement {
  static readonly observedAttributes = ["server", "room", "token", "max-messages"];

  private readonly root: ShadowRoot;
  private readonly log: HTMLOListElement;
  private readonly pinned: HTMLElement;
  private readonly roomLabel: HTMLElement;
  private readonly online: HTMLElement;
  private readonly conn: HTMLElement;
  private readonly feedback: HTMLElement;
  private readonly input: HTMLInputElement;
  private readonly button: HTMLButtonElement;
  private client: RoomClient | null = null;
  private provider: TokenProvider | undefined;
  /** Between connectedCallback and disconnectedCallback. */
  private attached = false;
  /** Items waiting for the next animation frame; never more than the list holds. */
  private queue: Item[] = [];
  private pins: MessageDetail[] = [];
  private pinsChanged = false;
  private frame = 0;
  private feedbackTimer = 0;
  private connState: ConnState = "stopped";
  private members = 0;
  private readonly timeFormat = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });

  constructor() {
    super();
    this.root = this.attachShadow({ mode: "open" });
    this.root.innerHTML = TEMPLATE;
    const find = <T extends Element>(selector: string) => this.root.querySelector(selector) as T;
    this.log = find("ol");
    this.pinned = find(".pinned");
    this.roomLabel = find(".room");
    this.online = find(".online");
    this.conn = find(".conn");
    this.feedback = find(".feedback");
    this.input = find("input");
    this.button = find("button");
    find<HTMLFormElement>("form").addEventListener("submit", (event) => {
      event.preventDefault();
      this.submit();
    });
  }

  /** The connection's state: `connecting`, `live`, `reconnecting` or `stopped`. */
  get state(): ConnState {
    return this.connState;
  }

  /**
   * Fetches a fresh token from the app's backend: with one, the session is
   * refreshed before its token expires instead of being closed.
   */
  get tokenProvider(): TokenProvider | undefined {
    return this.provider;
  }

  set tokenProvider(provider: TokenProvider | undefined) {
    this.provider = provider;
    if (this.client !== null) {
      this.client.reconnectWith(this.options());
    }
  }

  /** Members in the room, as the server last said. */
  get memberCount(): number {
    return this.members;
  }

  /** Sends `text` as a chat message; resolves once the server accepted it. */
  async send(text: string): Promise<{ msgId: string; ts: number }> {
    if (this.client === null) {
      throw new SendError(ErrorCode.UNSPECIFIED, "not connected", 0);
    }
    const ack = await this.client.send(text);
    return { msgId: ack.msgId.toString(), ts: Number(ack.ts) };
  }

  connectedCallback(): void {
    this.attached = true;
    this.start();
  }

  disconnectedCallback(): void {
    this.attached = false;
    this.client?.stop("removed from the page");
    this.client = null;
    cancelAnimationFrame(this.frame);
    this.frame = 0;
  }

  attributeChangedCallback(name: string, old: string | null, value: string | null): void {
    // Before connectedCallback (an upgrade reports every attribute first),
    // start() reads them all anyway.
    if (!this.attached || old === value) {
      return;
    }
    if (name === "max-messages") {
      this.trim(this.maxMessages());
    } else if (name === "room" || this.client === null) {
      this.client?.stop("switching rooms");
      this.client = null;
      this.start();
    } else {
      // New token or server: the same room, resumed where it was.
      this.client.reconnectWith(this.options());
    }
  }

  private options() {
    return {
      server: this.getAttribute("server") ?? "",
      token: this.getAttribute("token") ?? "",
      tokenProvider: this.provider,
      room: this.getAttribute("room") ?? "",
      deviceId: deviceId(),
      backfill: Number.parseInt(this.getAttribute("backfill") ?? "0", 10) || 0,
    };
  }

  /** Joins afresh: the list starts over from the room's recent messages. */
  private start(): void {
    this.clear();
    const options = this.options();
    this.roomLabel.textContent = clean(options.room);
    const missing = ["server", "room", "token"].filter((name) => !this.getAttribute(name));
    if (missing.length > 0) {
      this.onState({ state: "stopped", reason: `missing attribute ${missing.join(", ")}` });
      return;
    }
    this.client = new RoomClient(options, {
      event: (event) => this.onEvent(event),
      state: (change) => this.onState(change),
    });
    this.client.start();
  }

  private onEvent(event: CoreEvent): void {
    switch (event.type) {
      case "message": {
        const detail = messageDetail(event.room, event.epoch, event.message);
        const own = this.client !== null && event.message.sender === this.client.userId;
        this.enqueue({ kind: "message", detail, own });
        if (detail.priority || detail.kind === Kind.NOTICE) {
          this.pins = [detail, ...this.pins].slice(0, MAX_PINNED);
          this.pinsChanged = true;
        }
        this.emit("chatroom:message", detail);
        break;
      }
      case "dropped": {
        const parts = [];
        if (event.normal > 0n) {
          parts.push(`${event.normal} ${plural(event.normal, "message")} skipped`);
        }
        if (event.priority > 0n) {
          parts.push(`${event.priority} priority ${plural(event.priority, "message")} lost`);
        }
        this.enqueue({ kind: "marker", className: "skipped", text: `… ${parts.join(", ")}` });
        this.emit("chatroom:skipped", { normal: Number(event.normal), priority: Number(event.priority) });
        break;
      }
      case "reset":
        this.enqueue({ kind: "marker", className: "reset", text: "history reset: earlier messages may be missing" });
        this.emit("chatroom:reset", { room: event.room });
        break;
      case "members":
        // Counts reach this node from the room's owner a moment after a join,
        // so a fresh joiner can be told 0: it is in the room itself.
        this.members = Math.max(1, Number(event.count));
        this.online.textContent = `${this.members.toLocaleString()} online`;
        break;
      case "kicked":
        // The client decides whether to come back; its state change says why.
        break;
      case "error":
        this.showFeedback(describeError(event.error));
        this.emit("chatroom:error", errorDetail(SendError.of(event.error)));
        break;
    }
  }

  private onState(change: StateChange): void {
    this.connState = change.state;
    this.dataset.state = change.state;
    let text: string;
    switch (change.state) {
      case "connecting":
        text = "connecting…";
        break;
      case "live":
        text = "live";
        break;
      case "reconnecting":
        text = change.retryInMs === undefined ? "reconnecting…" : `reconnecting in ${duration(change.retryInMs)}`;
        break;
      case "stopped":
        text = "offline";
        break;
    }
    this.conn.textContent = text;
    this.conn.title = clean(change.reason);
    const stopped = change.state === "stopped";
    if (stopped) {
      // Why it stopped stays in the status line: nothing will replace it.
      window.clearTimeout(this.feedbackTimer);
      this.feedback.textContent = clean(change.reason);
      this.feedback.dataset.kind = "stopped";
    } else if (this.feedback.dataset.kind === "stopped") {
      this.showFeedback("");
    }
    this.input.disabled = stopped;
    this.button.disabled = stopped;
    this.emit("chatroom:state", { ...change });
  }

  private submit(): void {
    const text = this.input.value.trim();
    if (text === "" || this.client === null) {
      return;
    }
    this.input.value = "";
    this.client.send(text).then(
      () => {
        if (this.feedback.dataset.kind === "send") {
          this.showFeedback("");
        }
      },
      (error: SendError) => {
        this.showFeedback(refusalText(error), "send");
        this.emit("chatroom:error", errorDetail(error));
        // Give the text back unless something new was typed meanwhile.
        if (this.input.value === "" && error.code !== ErrorCode.BANNED) {
          this.input.value = text;
        }
      },
    );
  }

  private showFeedback(text: string, kind = ""): void {
    window.clearTimeout(this.feedbackTimer);
    this.feedback.textContent = clean(text);
    this.feedback.dataset.kind = kind;
    if (text !== "") {
      this.feedbackTimer = window.setTimeout(() => this.showFeedback(""), FEEDBACK_MS);
    }
  }

  private enqueue(item: Item): void {
    this.queue.push(item);
    const max = this.maxMessages();
    if (this.queue.length > max) {
      // They would scroll out of the list in the same frame anyway.
      this.queue.splice(0, this.queue.length - max);
    }
    if (this.frame === 0) {
      this.frame = requestAnimationFrame(() => this.flush());
    }
  }

  /** Puts the queued items on the page, dropping the oldest beyond the bound. */
  private flush(): void {
    this.frame = 0;
    const items = this.queue;
    this.queue = [];
    const log = this.log;
    const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 48;
    this.trim(this.maxMessages() - items.length);
    const fragment = document.createDocumentFragment();
    for (const item of items) {
      fragment.append(this.render(item));
    }
    log.append(fragment);
    if (this.pinsChanged) {
      this.pinsChanged = false;
      this.renderPins();
    }
    if (atBottom) {
      log.scrollTop = log.scrollHeight;
    }
  }

  /** Removes the oldest entries until at most `keep` remain. */
  private trim(keep: number): void {
    let excess = this.log.childElementCount - Math.max(0, keep);
    while (excess > 0 && this.log.firstElementChild !== null) {
      this.log.firstElementChild.remove();
      excess -= 1;
    }
  }

  private clear(): void {
    this.queue = [];
    this.pins = [];
    this.log.replaceChildren();
    this.renderPins();
    this.online.textContent = "";
    this.showFeedback("");
  }

  private render(item: Item): HTMLLIElement {
    const li = document.createElement("li");
    if (item.kind === "marker") {
      li.className = `marker ${item.className}`;
      li.textContent = item.text;
      return li;
    }
    const { detail } = item;
    li.className = "msg";
    li.classList.toggle("priority", detail.priority);
    li.classList.toggle("notice", detail.kind === Kind.NOTICE);
    li.classList.toggle("own", item.own);
    li.dataset.key = `${detail.epoch}:${detail.msgId}`;
    const time = document.createElement("time");
    const date = new Date(detail.ts / 1000);
    time.dateTime = date.toISOString();
    time.textContent = this.timeFormat.format(date);
    li.append(time, ...messageBody(detail));
    return li;
  }

  private renderPins(): void {
    const nodes = this.pins.map((detail) => {
      const pin = document.createElement("div");
      pin.className = "pin";
      pin.dataset.key = `${detail.epoch}:${detail.msgId}`;
      const body = document.createElement("div");
      body.className = "body";
      body.append(...messageBody(detail));
      const dismiss = document.createElement("button");
      dismiss.type = "button";
      dismiss.textContent = "×";
      dismiss.setAttribute("aria-label", "Dismiss notice");
      dismiss.addEventListener("click", () => {
        this.pins = this.pins.filter((other) => other !== detail);
        this.renderPins();
        this.log.focus();
      });
      pin.append(body, dismiss);
      return pin;
    });
    this.pinned.replaceChildren(...nodes);
    this.pinned.hidden = nodes.length === 0;
  }

  private maxMessages(): number {
    const value = Number.parseInt(this.getAttribute("max-messages") ?? "", 10);
    return Number.isFinite(value) && value > 0 ? value : DEFAULT_MAX_MESSAGES;
  }

  private emit(type: string, detail: unknown): void {
    this.dispatchEvent(new CustomEvent(type, { detail, bubbles: true, composed: true }));
  }
}

function messageDetail(room: string, epoch: bigint, message: ChatMessage): MessageDetail {
  return {
    room,
    epoch: epoch.toString(),
    msgId: message.msgId.toString(),
    ts: Number(message.ts),
    sender: message.sender,
    senderInfo:
      message.senderInfo === undefined
        ? undefined
        : { name: message.senderInfo.name, badges: [...message.senderInfo.badges], color: message.senderInfo.color },
    text: utf8.decode(message.payload),
    priority: message.lane === Lane.PRIORITY,
    kind: message.kind,
  };
}

const utf8 = new TextDecoder("utf-8", { fatal: false });

/** The sender and the text of a message, as text nodes only. */
function messageBody(detail: MessageDetail): HTMLSpanElement[] {
  const sender = document.createElement("span");
  sender.className = "sender";
  const info = detail.senderInfo;
  if (info !== undefined && info.name !== "") {
    sender.textContent = clean(info.name);
    sender.title = clean(detail.sender);
    for (const badge of [...info.badges].reverse()) {
      const mark = document.createElement("span");
      mark.className = "badge";
      mark.textContent = clean(badge);
      sender.prepend(mark);
    }
  } else {
    sender.textContent = clean(detail.sender);
  }
  if (info !== undefined && /^#[0-9a-fA-F]{6}$/.test(info.color)) {
    sender.style.color = info.color;
  }
  const text = document.createElement("span");
  text.className = "text";
  const body = clean(detail.text);
  switch (detail.kind) {
    case Kind.CHAT:
    case Kind.NOTICE:
      text.textContent = body;
      break;
    case Kind.LIKE:
      text.textContent = "sent a like";
      break;
    case Kind.GIFT:
      text.textContent = body === "" ? "sent a gift" : `sent a gift: ${body}`;
      break;
    default:
      text.textContent = `[kind ${detail.kind}] ${body}`;
  }
  return [sender, text];
}

/** Why a send was refused, for people. */
function refusalText(error: SendError): string {
  const after = error.retryAfterMs > 0 ? `, try again in ${duration(error.retryAfterMs)}` : "";
  switch (error.code) {
    case ErrorCode.RATE_LIMITED:
      return `slow down${after}`;
    case ErrorCode.MUTED:
      return error.retryAfterMs > 0 ? `you are muted for ${duration(error.retryAfterMs)}` : "you are muted";
    case ErrorCode.BANNED:
      return "you are banned from this room";
    case ErrorCode.PAYLOAD_TOO_LARGE:
      return `message too long${error.serverMessage === "" ? "" : ` (${error.serverMessage})`}`;
    case ErrorCode.NOT_JOINED:
      return "not in the room yet, try again";
    case ErrorCode.FORBIDDEN:
      return error.serverMessage === "" ? "not allowed" : `not allowed: ${error.serverMessage}`;
    case ErrorCode.CONTENT_REJECTED:
      return `not sent: ${error.serverMessage === "" ? "the room's moderation refused it" : error.serverMessage}`;
    case ErrorCode.OVERLOADED:
      return `the server is busy${after}`;
    default:
      return `not sent: ${error.serverMessage === "" ? ErrorCode[error.code] : error.serverMessage}`;
  }
}

function errorDetail(error: SendError) {
  return { code: ErrorCode[error.code] ?? String(error.code), message: error.serverMessage, retryAfterMs: error.retryAfterMs };
}

/** `3 s`, or `12 min` from 90 s on; never below 1 s. */
function duration(ms: number): string {
  const seconds = Math.max(1, Math.ceil(ms / 1000));
  return seconds < 90 ? `${seconds} s` : `${Math.ceil(seconds / 60)} min`;
}

function plural(n: bigint, word: string): string {
  return n === 1n ? word : `${word}s`;
}

/**
 * `text` safe to show on one line: line breaks and tabs become spaces; other
 * control characters and invisible bidirectional or zero-width formatting
 * characters (which could disguise a sender or reorder a line) become U+FFFD.
 */
export function clean(text: string): string {
  return text
    .replace(/[\t\n\r]/g, " ")
    .replace(/[\u0000-\u001f\u007f-\u009f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]/g, "\ufffd");
}

/** This tab's device id: random, kept for the tab's life in sessionStorage. */
function deviceId(): string {
  const fresh = `web-${Array.from(crypto.getRandomValues(new Uint8Array(8)), (b) => b.toString(16).padStart(2, "0")).join("")}`;
  try {
    const kept = sessionStorage.getItem(DEVICE_KEY);
    if (kept !== null) {
      return kept;
    }
    sessionStorage.setItem(DEVICE_KEY, fresh);
  } catch {
    // Storage refused (a sandboxed frame): a new device per page load.
  }
  return fresh;
}
