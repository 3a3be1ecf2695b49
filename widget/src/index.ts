// The widget's entry point: importing this module defines
// `<chatroom-widget>` (once, even if loaded twice).

import { ChatroomWidget } from "./element.js";

if (customElements.get("chatroom-widget") === undefined) {
  customElements.define("chatroom-widget", ChatroomWidget);
}

export { ChatroomWidget };
export type { MessageDetail } from "./element.js";
export { SendError } from "./connection.js";
