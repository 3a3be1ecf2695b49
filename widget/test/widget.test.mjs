// The widget in a real headless Chromium against a real embedded server that
// each test starts: pages load the server's /demo (which loads /widget.js,
// the committed bundle compiled into the binary) and chat through it.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { entries, entry, launchBrowser, openWidget, Server, screenshot, seen, widgetState } from "./support.mjs";

let browser;

before(async () => {
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
});

/**
 * Runs `body` with a fresh server and a way to open pages on it; closes the
 * pages, then the server (showing its log on failure).
 */
async function withServer(body) {
  const server = await Server.start();
  const pages = [];
  const open = async (room, user) => {
    const page = await openWidget(browser, server.demo(room, user));
    pages.push(page);
    return page;
  };
  try {
    await body(server, open);
  } catch (error) {
    error.message += `\n--- msg-svc log ---\n${server.log().slice(-4000)}`;
    throw error;
  } finally {
    await Promise.all(pages.map((page) => page.context().close()));
    await server.close();
  }
}

test("two pages chat by keyboard, each message once, and see who is online", async () => {
  await withServer(async (server, open) => {
    const alice = await open("lobby", "alice");
    const bob = await open("lobby", "bob");

    // Keyboard only: Tab reaches the list, then the labelled input; Enter sends.
    await alice.keyboard.press("Tab");
    await alice.keyboard.press("Tab");
    const input = alice.getByRole("textbox", { name: "Message" });
    assert.ok(await input.evaluate((el) => el.getRootNode().activeElement === el), "Tab, Tab focuses the input");
    await alice.keyboard.type("hi bob, this is alice");
    await alice.keyboard.press("Enter");
    await entry(bob, "hi bob, this is alice").waitFor();
    assert.equal(await input.inputValue(), "", "the input is cleared once sent");

    await bob.getByRole("textbox", { name: "Message" }).fill("hello alice 👋");
    await bob.getByRole("button", { name: "Send" }).press("Enter");
    await entry(alice, "hello alice 👋").waitFor();

    for (const page of [alice, bob]) {
      await page.locator("chatroom-widget .online").getByText("2 online").waitFor();
      const list = await entries(page);
      assert.deepEqual(
        list.map(({ sender, text }) => `${sender}: ${text}`),
        ["alice: hi bob, this is alice", "bob: hello alice 👋"],
      );
      assert.deepEqual([...(await seen(page)).values()], [1, 1], "one chatroom:message event per message");
      const log = page.getByRole("log", { name: "Chat messages" });
      assert.equal(await log.getAttribute("aria-live"), "polite");
      assert.deepEqual(page.errors, []);
    }
    assert.match((await entries(alice))[0].className, /\bown\b/, "alice's own message is marked");
    await screenshot(alice, "chat-alice");
    await screenshot(bob, "chat-bob");
  });
});

test("a system notice appears pinned above the chat and highlighted in it", async () => {
  await withServer(async (server, open) => {
    const viewer = await open("stage", "viewer");
    const fan = await open("stage", "fan");
    await fan.getByRole("textbox", { name: "Message" }).fill("first!");
    await fan.keyboard.press("Enter");
    await entry(viewer, "first!").waitFor();

    const notice = "The stream starts in 5 minutes";
    const posted = await server.admin("POST", "/rooms/stage/notices", { text: notice });
    const pin = viewer.locator("chatroom-widget .pinned .pin").filter({ hasText: notice });
    await pin.waitFor();
    assert.equal(await viewer.getByRole("region", { name: "Pinned notices" }).isVisible(), true);
    const inList = entry(viewer, notice);
    await inList.waitFor();
    assert.match(await inList.getAttribute("class"), /\bnotice\b/);
    assert.match(await inList.getAttribute("class"), /\bpriority\b/);
    assert.match(await inList.getAttribute("data-key"), new RegExp(`:${posted.msg_id}$`));

    // Chat goes on below; the notice stays pinned.
    for (const text of ["can't wait", "hello from the back row"]) {
      await fan.getByRole("textbox", { name: "Message" }).fill(text);
      await fan.keyboard.press("Enter");
      await entry(viewer, text).waitFor();
    }
    assert.equal(await pin.count(), 1);
    await screenshot(viewer, "notice-light");

    // The demo page's theme toggle, by keyboard: the widget follows.
    await viewer.getByRole("button", { name: "Dark page" }).press("Enter");
    await viewer.locator('chatroom-widget[theme="dark"]').waitFor();
    const background = await viewer
      .locator("chatroom-widget")
      .evaluate((widget) => getComputedStyle(widget).backgroundColor);
    assert.equal(background, "rgb(22, 24, 28)", "the dark default background");
    await screenshot(viewer, "notice-dark");

    // Dismissed by keyboard.
    await pin.getByRole("button", { name: "Dismiss notice" }).press("Enter");
    await viewer.locator("chatroom-widget .pinned").waitFor({ state: "hidden" });
    assert.deepEqual(viewer.errors, []);
  });
});

test("a flood shows the skipped indicator while the list stays bounded", async () => {
  await withServer(async (server, open) => {
    const FLOOD = 3000;
    const MAX = 100;
    // No upstream limit, a small ring and slow rounds: most of the flood is
    // shed by design between two rounds.
    await server.admin("PATCH", "/rooms/flood/config", {
      normal_per_s: 100000,
      normal_burst: 100000,
      normal_ring: 64,
      round_interval_ms: 500,
    });
    const viewer = await open("flood", "viewer");
    await viewer.locator("chatroom-widget").evaluate((widget, max) => {
      widget.setAttribute("max-messages", String(max));
      const log = widget.shadowRoot.querySelector(".log");
      const watch = { maxEntries: 0, skippedMarkers: [], received: 0, skipped: 0, longestTaskMs: 0 };
      window.__flood = watch;
      new MutationObserver((records) => {
        watch.maxEntries = Math.max(watch.maxEntries, log.childElementCount);
        for (const record of records) {
          for (const node of record.addedNodes) {
            if (node.classList?.contains("skipped")) {
              watch.skippedMarkers.push(node.textContent);
            }
          }
        }
      }).observe(log, { childList: true });
      widget.addEventListener("chatroom:message", (event) => {
        if (event.detail.text.startsWith("flood ")) {
          watch.received += 1;
        }
      });
      widget.addEventListener("chatroom:skipped", (event) => {
        watch.skipped += event.detail.normal;
      });
      new PerformanceObserver((list) => {
        for (const task of list.getEntries()) {
          watch.longestTaskMs = Math.max(watch.longestTaskMs, task.duration);
        }
      }).observe({ type: "longtask" });
    }, MAX);

    const flooder = await open("flood", "flooder");
    const started = Date.now();
    const acked = await flooder.locator("chatroom-widget").evaluate(
      (widget, count) => Promise.all(Array.from({ length: count }, (_, i) => widget.send(`flood ${i}`))).then((acks) => acks.length),
      FLOOD,
    );
    assert.equal(acked, FLOOD, "every flood message accepted");

    // Every message is accounted for: shown, or reported as skipped.
    await viewer.waitForFunction((count) => window.__flood.received + window.__flood.skipped >= count, FLOOD);
    const watch = await viewer.evaluate(() => window.__flood);
    console.log(
      `flood of ${FLOOD} in ${Date.now() - started} ms: ${watch.received} shown, ${watch.skipped} skipped, ` +
        `${watch.skippedMarkers.length} skip lines, at most ${watch.maxEntries} entries, longest task ${watch.longestTaskMs} ms`,
    );
    assert.equal(watch.received + watch.skipped, FLOOD);
    assert.ok(watch.skipped > 0, "the server shed part of the flood");
    assert.ok(watch.skippedMarkers.length > 0, "a skip line was shown");
    for (const marker of watch.skippedMarkers) {
      assert.match(marker, /^… \d+ messages? skipped$/);
    }
    assert.ok(watch.maxEntries <= MAX, `the list held ${watch.maxEntries} entries, more than ${MAX}`);
    const list = await entries(viewer);
    assert.equal(list.length, MAX, "the list is full and bounded");
    assert.equal(list.at(-1).text, `flood ${FLOOD - 1}`, "the newest message is last");
    const keys = list.map((e) => e.key).filter((key) => key !== null);
    assert.equal(new Set(keys).size, keys.length, "no message twice");
    const lastSkip = viewer.locator("chatroom-widget .marker.skipped").last();
    if ((await lastSkip.count()) > 0) {
      await lastSkip.scrollIntoViewIfNeeded();
    }
    await screenshot(viewer, "flood");
    assert.deepEqual(viewer.errors, []);
  });
});

test("a <script> payload renders as text and runs nowhere", async () => {
  await withServer(async (server, open) => {
    const mallory = await open("safe", "mallory");
    const victim = await open("safe", "victim");
    const payload = `<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2"><b>bold?</b>`;
    await mallory.getByRole("textbox", { name: "Message" }).fill(payload);
    await mallory.keyboard.press("Enter");
    const shown = entry(victim, payload);
    await shown.waitFor();
    for (const page of [mallory, victim]) {
      await entry(page, payload).waitFor();
      const injected = await page
        .locator("chatroom-widget")
        .evaluate((widget) => widget.shadowRoot.querySelectorAll(".log script, .log img, .log b").length);
      assert.equal(injected, 0, "no element was made from the payload");
      assert.equal(await page.evaluate(() => window.__pwned), undefined);
      assert.deepEqual(page.errors, []);
    }
    assert.equal(await shown.locator(".text").textContent(), payload);
    await screenshot(victim, "script-as-text");
  });
});

test("after a server restart the widget resumes, marks the reset, and shows each message once", async () => {
  await withServer(async (server, open) => {
    const alice = await open("restart", "alice");
    const bob = await open("restart", "bob");
    const say = async (page, text) => {
      await page.getByRole("textbox", { name: "Message" }).fill(text);
      await page.keyboard.press("Enter");
      for (const reader of [alice, bob]) {
        await entry(reader, text).waitFor();
      }
    };
    await say(bob, "before the restart 1");
    await say(alice, "before the restart 2");

    // The embedded server keeps nothing across a restart: the room comes back
    // empty, in a new epoch, with msg_ids counting from 1 again.
    await server.stop();
    await widgetState(alice, "reconnecting");
    await widgetState(bob, "reconnecting");
    await server.launch();
    await widgetState(alice, "live");
    await widgetState(bob, "live");
    await say(bob, "after the restart");

    // Resume in the same epoch: a new token makes alice reconnect at once
    // from her cursor.
    await alice.locator("chatroom-widget").evaluate((widget, token) => widget.setAttribute("token", token), server.token("alice"));
    await widgetState(alice, "live");
    await say(bob, "after alice's reconnect");

    const expected = [
      "bob: before the restart 1",
      "alice: before the restart 2",
      "history reset: earlier messages may be missing",
      "bob: after the restart",
      "bob: after alice's reconnect",
    ];
    for (const page of [alice, bob]) {
      const list = await entries(page);
      assert.deepEqual(
        list.map(({ sender, text }) => (sender === null ? text : `${sender}: ${text}`)),
        expected,
        "every message once, in order, with one reset line where the history was lost",
      );
      const keys = list.map((e) => e.key).filter((key) => key !== null);
      assert.equal(new Set(keys).size, keys.length, `message keys (epoch:msg_id) are unique: ${keys}`);
      assert.notEqual(keys[0].split(":")[0], keys.at(-1).split(":")[0], "the epoch changed");
      assert.deepEqual([...(await seen(page)).values()], [1, 1, 1, 1], "one chatroom:message event per message");
      assert.deepEqual(page.errors, []);
    }
    await screenshot(alice, "restart-alice");
  });
});

test("refusals show why: rate limit, mute, then a ban that stops the panel", async () => {
  await withServer(async (server, open) => {
    const eve = await open("strict", "eve");
    const input = eve.getByRole("textbox", { name: "Message" });
    const feedback = eve.locator("chatroom-widget .feedback");
    const say = async (text) => {
      await input.fill(text);
      await input.press("Enter");
    };

    await server.admin("PATCH", "/rooms/strict/config", { normal_per_s: 1, normal_burst: 1 });
    await say("one");
    await entry(eve, "one").waitFor();
    await say("two, too soon");
    await feedback.getByText(/^slow down, try again in \d+ s$/).waitFor();
    assert.equal(await input.inputValue(), "two, too soon", "the refused text is given back");

    await server.admin("PUT", "/rooms/strict/mutes/eve", { duration_s: 600 });
    await say("can you hear me");
    await feedback.getByText(/^you are muted( for \d+ (s|min))?$/).waitFor();

    await server.admin("PUT", "/rooms/strict/bans/eve");
    await widgetState(eve, "stopped");
    await feedback.getByText("removed from strict: you are banned").waitFor();
    assert.equal(await input.isDisabled(), true, "a banned panel takes no input");
    await screenshot(eve, "banned");
    assert.deepEqual(eve.errors, []);
  });
});

test("a token provider keeps the panel live past its token's expiry, and the backend's names and badges show", async () => {
  await withServer(async (server, open) => {
    const alice = await open("stage", "alice");
    const bob = await open("stage", "bob");
    // Both pages switch to tokens that expired 3 s ago (inside the server's
    // 5 s leeway): bob's panel has a provider for fresh ones, alice's not.
    const info = { name: "Bob the Builder", badges: ["vip"], color: "#2266aa" };
    await bob.exposeFunction("freshToken", () => server.token("bob", { claims: { info } }));
    await bob.locator("chatroom-widget").evaluate((widget) => {
      widget.tokenProvider = () => window.freshToken();
    });
    await bob
      .locator("chatroom-widget")
      .evaluate((widget, token) => widget.setAttribute("token", token), server.token("bob", { ttlS: -3, claims: { info } }));
    await alice
      .locator("chatroom-widget")
      .evaluate((widget, token) => widget.setAttribute("token", token), server.token("alice", { ttlS: -3 }));

    // The server closes alice's session at its token's expiry.
    await widgetState(alice, "stopped");
    await alice.locator("chatroom-widget .feedback").getByText(/token expired/).waitFor();
    // The same sweep left bob's refreshed session alone: he still posts.
    await widgetState(bob, "live");
    const input = bob.getByRole("textbox", { name: "Message" });
    await input.fill("still here");
    await input.press("Enter");
    await entry(bob, "still here").waitFor();
    const mine = (await entries(bob)).find((item) => item.text === "still here");
    assert.equal(mine.sender, "vipBob the Builder", "the badge, then the name the backend gave");
    const color = await entry(bob, "still here")
      .locator(".sender")
      .evaluate((sender) => sender.style.color);
    assert.equal(color, "rgb(34, 102, 170)");
    const metrics = await fetch(`${server.http}/metrics`).then((response) => response.text());
    assert.match(metrics, /^chatroom_tokens_refreshed_total [1-9]/m);
    assert.match(metrics, /^chatroom_sessions_token_expired_total 1$/m);
    assert.deepEqual(bob.errors, []);
  });
});

test("the room's word filter refuses with its reason and masks without a trace of the word", async () => {
  await withServer(async (server, open) => {
    await server.admin("PUT", "/rooms/clean/word-lists/slurs", { action: "reject", words: ["badword"] });
    await server.admin("PUT", "/rooms/clean/word-lists/mild", { action: "mask", words: ["darn"] });
    const carol = await open("clean", "carol");
    const input = carol.getByRole("textbox", { name: "Message" });
    await input.fill("oh ＤＡＲＮ it");
    await input.press("Enter");
    await entry(carol, "oh **** it").waitFor();
    await input.fill("a BADWORD here");
    await input.press("Enter");
    const feedback = carol.locator("chatroom-widget .feedback");
    await feedback.getByText("not sent: refused by the room's word filter (slurs)").waitFor();
    assert.equal(await input.inputValue(), "a BADWORD here", "the refused text is given back");
    assert.deepEqual(carol.errors, []);
  });
});
