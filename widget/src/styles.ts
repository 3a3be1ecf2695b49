// The panel's stylesheet, inside its shadow root. Every colour and the font
// come from a `--chatroom-*` custom property the page may set (they inherit
// through the shadow boundary); the defaults follow `prefers-color-scheme`
// unless the `theme` attribute says `light` or `dark`.

const LIGHT = `
  --_bg: var(--chatroom-bg, #ffffff);
  --_fg: var(--chatroom-fg, #1b1f24);
  --_muted: var(--chatroom-muted, #5b6572);
  --_border: var(--chatroom-border, #d6dbe1);
  --_accent: var(--chatroom-accent, #2057d6);
  --_accent-fg: var(--chatroom-accent-fg, #ffffff);
  --_notice-bg: var(--chatroom-notice-bg, #fff3cf);
  --_notice-fg: var(--chatroom-notice-fg, #4d3800);
  --_own-bg: var(--chatroom-own-bg, #eef3ff);
  --_input-bg: var(--chatroom-input-bg, #f6f7f9);
  --_error: var(--chatroom-error, #b3261e);
  color-scheme: light;
`;

const DARK = `
  --_bg: var(--chatroom-bg, #16181c);
  --_fg: var(--chatroom-fg, #e8eaed);
  --_muted: var(--chatroom-muted, #9aa3ad);
  --_border: var(--chatroom-border, #2f343b);
  --_accent: var(--chatroom-accent, #7aa2ff);
  --_accent-fg: var(--chatroom-accent-fg, #0b1020);
  --_notice-bg: var(--chatroom-notice-bg, #3a3012);
  --_notice-fg: var(--chatroom-notice-fg, #ffe29a);
  --_own-bg: var(--chatroom-own-bg, #1f2a44);
  --_input-bg: var(--chatroom-input-bg, #1e2126);
  --_error: var(--chatroom-error, #ff8a80);
  color-scheme: dark;
`;

export const STYLES = `
:host {
  ${LIGHT}
  --_font: var(--chatroom-font, system-ui, -apple-system, "Segoe UI", Roboto, sans-serif);
  --_font-size: var(--chatroom-font-size, 14px);
  --_radius: var(--chatroom-radius, 10px);
  display: flex;
  flex-direction: column;
  height: 480px;
  min-height: 200px;
  box-sizing: border-box;
  border: 1px solid var(--_border);
  border-radius: var(--_radius);
  background: var(--_bg);
  color: var(--_fg);
  font-family: var(--_font);
  font-size: var(--_font-size);
  line-height: 1.4;
  overflow: hidden;
}
@media (prefers-color-scheme: dark) {
  :host(:not([theme="light"])) { ${DARK} }
}
:host([theme="dark"]) { ${DARK} }
:host([hidden]) { display: none; }
* { box-sizing: border-box; }
.head {
  display: flex;
  align-items: baseline;
  gap: 0.75em;
  padding: 0.6em 0.9em;
  border-bottom: 1px solid var(--_border);
}
.room { flex-shrink: 0; max-width: 50%; font-weight: 600; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.online, .conn { color: var(--_muted); font-size: 0.9em; white-space: nowrap; }
.conn { margin-left: auto; overflow: hidden; text-overflow: ellipsis; }
.conn::before {
  content: "";
  display: inline-block;
  width: 0.55em;
  height: 0.55em;
  margin-right: 0.4em;
  border-radius: 50%;
  background: var(--_muted);
}
:host([data-state="live"]) .conn::before { background: #2da44e; }
:host([data-state="reconnecting"]) .conn::before { background: #d4a72c; }
:host([data-state="stopped"]) .conn::before { background: var(--_error); }
.pinned { border-bottom: 1px solid var(--_border); }
.pin {
  display: flex;
  align-items: flex-start;
  gap: 0.5em;
  padding: 0.45em 0.9em;
  background: var(--_notice-bg);
  color: var(--_notice-fg);
}
.pin + .pin { border-top: 1px solid var(--_border); }
.pin .body { flex: 1; min-width: 0; overflow-wrap: anywhere; }
.pin button {
  border: 0;
  background: transparent;
  color: inherit;
  font: inherit;
  cursor: pointer;
  padding: 0 0.3em;
  border-radius: 4px;
}
.log {
  flex: 1;
  min-height: 0;
  margin: 0;
  padding: 0.4em 0;
  list-style: none;
  overflow-y: auto;
  overscroll-behavior: contain;
}
.log > li { padding: 0.2em 0.9em; overflow-wrap: anywhere; }
.msg time { color: var(--_muted); font-size: 0.85em; margin-right: 0.45em; font-variant-numeric: tabular-nums; }
.sender { font-weight: 600; margin-right: 0.35em; unicode-bidi: isolate; }
.sender::after { content: ":"; }
.badge { font-size: 0.75em; font-weight: 600; margin-right: 0.3em; padding: 0 0.3em; border-radius: 0.3em; background: var(--chatroom-badge-bg, rgba(127, 127, 127, 0.2)); }
.text { unicode-bidi: isolate; }
.msg.own { background: var(--_own-bg); }
.msg.priority, .msg.notice {
  background: var(--_notice-bg);
  color: var(--_notice-fg);
  border-left: 3px solid var(--_accent);
}
.marker { color: var(--_muted); font-style: italic; text-align: center; font-size: 0.9em; }
.feedback { margin: 0; padding: 0 0.9em; min-height: 0; color: var(--_error); font-size: 0.9em; }
.feedback:not(:empty) { padding: 0.35em 0.9em; }
.compose {
  display: flex;
  gap: 0.5em;
  padding: 0.6em 0.9em;
  border-top: 1px solid var(--_border);
}
.compose input {
  flex: 1;
  min-width: 0;
  padding: 0.5em 0.7em;
  border: 1px solid var(--_border);
  border-radius: calc(var(--_radius) * 0.7);
  background: var(--_input-bg);
  color: var(--_fg);
  font: inherit;
}
.compose button {
  padding: 0.5em 1em;
  border: 0;
  border-radius: calc(var(--_radius) * 0.7);
  background: var(--_accent);
  color: var(--_accent-fg);
  font: inherit;
  font-weight: 600;
  cursor: pointer;
}
.compose :disabled { opacity: 0.55; cursor: not-allowed; }
:focus-visible { outline: 2px solid var(--_accent); outline-offset: 2px; }
.visually-hidden {
  position: absolute;
  width: 1px;
  height: 1px;
  overflow: hidden;
  clip: rect(0 0 0 0);
  white-space: nowrap;
}
`;
