// The demo chat client and reference client of PROTOCOL.md (version 1, and
// the entries inline in `notify` of version 1.1).
// Plain JavaScript, no build step, served by the gateway at /app.js.
//
// How it follows the protocol:
// - One WebSocket per tab (`/v1/ws?token=...&device=...`). The sync key (the
//   highest inbox seq processed) is kept per user and device in localStorage
//   and only ever moved forward by received entries, never by acks.
// - It syncs on every connect and whenever `notify` says the head moved past
//   its seq, paging while `more` is true; a notify that carries its entries
//   down to the seq it holds (`prev` <= seq, no sync running) is taken
//   instead. Entries are deduplicated by (sender, client_msg_id) and shown in
//   conv_seq order.
// - Reconnects use exponential backoff with jitter; `goaway` is honoured by
//   reconnecting after `reconnect_after_ms`.
// - Sends go one at a time from an outbox (kept in sessionStorage, so a reload
//   keeps unsent messages). A send keeps its client_msg_id for every retry:
//   after `retry_after_ms` on `unavailable`/`rate_limited`, and after a
//   reconnect when no ack arrived. The server's dedup makes retries safe.
// - History is read over REST, newest page first, older pages on scrolling up.
// - Typing in the message box sends `typing` (at most every 3 s per
//   conversation); others' indicators show under the chat title.
// - The peers of direct chats are watched with `presence`: a dot in the
//   list, "online" or "last seen" under the chat title.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);

  const USER_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;
  const MAX_BODY_BYTES = 16 * 1024;
  const SYNC_LIMIT = 200;
  const HISTORY_LIMIT = 50;
  const BACKOFF_BASE_MS = 500;
  const BACKOFF_MAX_MS = 10000;
  const REQUEST_TIMEOUT_MS = 15000;
  // The server's default windows for changing one's own message (protocol 1.1).
  const RECALL_WINDOW_MS = 2 * 60 * 1000;
  const EDIT_WINDOW_MS = 15 * 60 * 1000;
  // Typing indicators: sent at most this often per conversation, and shown
  // this long after the last one came.
  const TYPING_EVERY_MS = 3000;
  const TYPING_SHOWN_MS = 5000;
  const PING_EVERY_MS = 25000;
  const FIRST_CONNECT_GRACE_MS = 1500;

  // ---------------------------------------------------------------- storage

  const storage = {
    get(area, key) {
      try { return window[area].getItem(key); } catch { return null; }
    },
    set(area, key, value) {
      try { window[area].setItem(key, value); } catch { /* private mode or full: keep going in memory */ }
    },
    remove(area, key) {
      try { window[area].removeItem(key); } catch { /* ignore */ }
    },
  };

  function randomHex(bytes) {
    const buf = new Uint8Array(bytes);
    crypto.getRandomValues(buf);
    return Array.from(buf, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  /** This browser's device id (PROTOCOL.md: same alphabet as user ids). */
  function deviceId() {
    let id = storage.get("localStorage", "chat.device");
    if (!id || !USER_RE.test(id)) {
      id = "web-" + randomHex(6);
      storage.set("localStorage", "chat.device", id);
    }
    return id;
  }

  const seqKey = () => `chat.seq.${state.user}.${state.device}`;
  const outboxKey = () => `chat.outbox.${state.user}`;

  // ------------------------------------------------------------------ state

  const state = {
    user: null,
    token: null,
    device: deviceId(),
    seq: 0,
    /** conv_id -> conversation (see ensureConv). */
    convs: new Map(),
    openConv: null,
    /** Unacked sends, oldest first: {cmid, conv_id, body, retries}. */
    outbox: [],
    localOrder: 0,
    /** Whether this tab has synced up to the head once (for unread counts). */
    caughtUp: false,
    /** conv_id -> (user -> when their "typing" shows until, ms). */
    typing: new Map(),
    /** conv_id -> when this tab last said it was typing there (ms). */
    typingSent: new Map(),
    /** user -> {online, last_seen} of the direct chats' peers (watched). */
    presence: new Map(),
    /** The peers this connection watches, joined (to ask again on change). */
    watched: "",
  };

  const conn = {
    ws: null,
    rid: 0,
    /** rid -> {resolve, reject, timer} */
    pending: new Map(),
    online: false,
    everConnected: false,
    attempt: 0,
    timer: null,
    nextAttemptAt: 0,
    goawayAt: 0,
    connectingSince: 0,
    pingTimer: null,
    refreshing: false,
    announced: null,
    announcedOffline: false,
  };

  let syncing = false;
  let syncAgain = false;
  let flushing = false;

  // ------------------------------------------------------------ REST calls

  async function mintToken(user) {
    const resp = await fetch("/v1/dev/token", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ user }),
    });
    const body = await resp.json().catch(() => ({}));
    if (!resp.ok) {
      const err = new Error(resp.status === 404
        ? "Dev sign-in is off on this server."
        : body.message || `sign-in failed (HTTP ${resp.status})`);
      err.code = body.code;
      throw err;
    }
    return body.token;
  }

  function tokenExpiry(token) {
    try {
      const payload = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
      return JSON.parse(atob(payload)).exp * 1000;
    } catch {
      return 0;
    }
  }

  async function refreshToken() {
    state.token = await mintToken(state.user);
    saveSession();
  }

  /** A REST call with the bearer token; a 401 gets one fresh dev token. */
  async function api(method, path, body, retried = false) {
    const headers = { Authorization: `Bearer ${state.token}` };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const resp = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (resp.status === 401 && !retried && state.user) {
      await refreshToken();
      return api(method, path, body, true);
    }
    const data = await resp.json().catch(() => ({}));
    if (!resp.ok) {
      const err = new Error(data.message || `HTTP ${resp.status}`);
      err.code = data.code;
      err.status = resp.status;
      throw err;
    }
    return data;
  }

  // ---------------------------------------------------------- conversations

  function dmId(a, b) {
    return a < b ? `dm:${a}:${b}` : `dm:${b}:${a}`;
  }

  function ensureConv(convId) {
    let conv = state.convs.get(convId);
    if (!conv) {
      conv = {
        conv_id: convId,
        kind: convId.startsWith("dm:") ? "dm" : "group",
        members: convId.startsWith("dm:") ? convId.slice(3).split(":") : [],
        title: null,
        known: false, // listed by the server (GET /v1/conversations)
        messages: new Map(), // key -> message
        historyState: "none", // none | loading | loaded
        olderCursor: undefined, // `before` of the next older page; null: none
        loadingOlder: false,
        unread: 0,
        readUpTo: 0, // this user's read marker (protocol 1.1)
        readAsked: 0, // the highest marker asked for by this tab
        peerRead: 0, // a direct chat's peer's marker, from read receipts
        changes: new Map(), // conv_seq -> recalls and edits of a message not here yet
        lastTs: 0,
        lastBody: "",
      };
      state.convs.set(convId, conv);
    }
    return conv;
  }

  function convName(conv) {
    if (conv.kind === "dm") {
      const peer = conv.members.find((m) => m !== state.user);
      return peer || conv.members[0] || conv.conv_id;
    }
    if (conv.title) return conv.title;
    const others = conv.members.filter((m) => m !== state.user);
    return others.length ? others.join(", ") : "Group";
  }

  function mergeConv(c) {
    const conv = ensureConv(c.conv_id);
    conv.kind = c.kind;
    conv.members = c.members;
    conv.title = c.title;
    conv.known = true;
    if (typeof c.read_up_to === "number") conv.readUpTo = Math.max(conv.readUpTo, c.read_up_to);
    // The server counts what this tab did not see arrive (before a reload).
    if (typeof c.unread === "number" && !chatVisible(conv.conv_id)) conv.unread = c.unread;
    return conv;
  }

  let refreshTimer = null;
  function refreshConversationsSoon() {
    if (refreshTimer) return;
    refreshTimer = setTimeout(() => {
      refreshTimer = null;
      refreshConversations();
    }, 150);
  }

  async function refreshConversations() {
    if (!state.token) return;
    try {
      const data = await api("GET", "/v1/conversations");
      for (const c of data.conversations) mergeConv(c);
      renderConvList();
      if (state.openConv) renderChatHead();
      watchPeers();
    } catch (err) {
      console.warn("listing conversations failed:", err.message);
    }
  }

  // --------------------------------------------------------------- messages

  const msgKey = (from, cmid) => `${from} ${cmid}`;

  const isChange = (m) => m.kind === "recall" || m.kind === "edit";

  /** Folds a recall or an edit (protocol 1.1) into the message it names. */
  function foldChange(msg, change) {
    if (change.kind === "recall") {
      msg.recalled = true;
      msg.body = "";
    } else if (!msg.recalled && change.conv_seq > (msg.editedAt || 0)) {
      msg.body = change.body;
      msg.editedAt = change.conv_seq;
    }
  }

  /** A recall or an edit: applied to its message, or kept until it arrives. */
  function applyChange(conv, change) {
    const target = Array.from(conv.messages.values()).find((m) => m.conv_seq === change.ref);
    if (target) {
      foldChange(target, change);
      previewOf(conv, target);
      return;
    }
    const waiting = conv.changes.get(change.ref) || [];
    waiting.push(change);
    conv.changes.set(change.ref, waiting);
  }

  function previewOf(conv, msg) {
    if (msg.ts && msg.ts >= conv.lastTs) {
      conv.lastTs = msg.ts;
      const text = msg.recalled ? "message recalled" : msg.body;
      conv.lastBody = `${msg.from === state.user ? "You" : msg.from}: ${text}`;
    }
  }

  /** Adds or updates a message (from sync, history, ack or a local send);
   * a recall or an edit is folded into its message instead. */
  function putMessage(conv, m) {
    if (m.kind === "read") return null;
    if (isChange(m)) {
      applyChange(conv, m);
      return null;
    }
    const key = msgKey(m.from, m.client_msg_id);
    let msg = conv.messages.get(key);
    if (!msg) {
      msg = {
        key,
        from: m.from,
        client_msg_id: m.client_msg_id,
        body: m.body,
        conv_seq: null,
        ts: null,
        state: null,
        note: "",
        order: ++state.localOrder,
        el: null,
      };
      conv.messages.set(key, msg);
    }
    if (m.conv_seq != null) {
      msg.conv_seq = m.conv_seq;
      msg.ts = m.ts;
      if (msg.from === state.user) {
        msg.state = "sent";
        msg.note = "";
      }
      for (const change of conv.changes.get(m.conv_seq) || []) foldChange(msg, change);
      conv.changes.delete(m.conv_seq);
    }
    if (m.recalled) foldChange(msg, { kind: "recall" });
    previewOf(conv, msg);
    return msg;
  }

  function sortedMessages(conv) {
    return Array.from(conv.messages.values()).sort((a, b) => {
      if (a.conv_seq != null && b.conv_seq != null) return a.conv_seq - b.conv_seq;
      if (a.conv_seq != null) return -1;
      if (b.conv_seq != null) return 1;
      return a.order - b.order;
    });
  }

  function chatVisible(convId) {
    return state.openConv === convId && document.visibilityState === "visible";
  }

  /** A read entry (protocol 1.1): this user's marker moved (on any
   * device), or the peer's in a direct chat (a read receipt). */
  function applyRead(conv, entry) {
    if (entry.from !== state.user) {
      conv.peerRead = Math.max(conv.peerRead, entry.ref);
      return;
    }
    conv.readUpTo = Math.max(conv.readUpTo, entry.ref);
    const left = Array.from(conv.messages.values())
      .filter((m) => m.from !== state.user && m.conv_seq > conv.readUpTo && !m.recalled).length;
    conv.unread = Math.min(conv.unread, left);
  }

  /** Tells the server this chat is read up to its newest message from
   * someone else, once it is on screen. */
  function markRead(conv) {
    let newest = 0;
    for (const m of conv.messages.values()) {
      if (m.from !== state.user && m.conv_seq > newest) newest = m.conv_seq;
    }
    if (newest <= conv.readUpTo || newest <= conv.readAsked || !conn.online) return;
    conv.readAsked = newest;
    request({ type: "read", conv_id: conv.conv_id, conv_seq: newest })
      .then((reply) => {
        if (reply.type === "read_ack") conv.readUpTo = Math.max(conv.readUpTo, reply.conv_seq);
        else conv.readAsked = 0;
      })
      .catch(() => { conv.readAsked = 0; });
  }

  /** One inbox entry from `sync_result`. */
  function applyEntry(entry) {
    const conv = ensureConv(entry.conv_id);
    if (isChange(entry)) {
      applyChange(conv, entry);
      return;
    }
    if (entry.kind === "read") {
      applyRead(conv, entry);
      return;
    }
    const isNew = !conv.messages.has(msgKey(entry.from, entry.client_msg_id))
      || conv.messages.get(msgKey(entry.from, entry.client_msg_id)).conv_seq == null;
    putMessage(conv, entry);
    if (entry.from === state.user) dropFromOutbox(entry.client_msg_id);
    // Their message is what they were typing.
    if (state.typing.get(entry.conv_id)?.delete(entry.from)) renderTyping();
    // Unread counts only what arrives after the first catch-up of this tab.
    if (isNew && state.caughtUp && entry.from !== state.user && !chatVisible(entry.conv_id)) {
      conv.unread += 1;
    }
    if (!conv.known) refreshConversationsSoon();
  }

  // ------------------------------------------------------------- WebSocket

  function wsUrl() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const q = new URLSearchParams({ token: state.token, device: state.device });
    return `${scheme}://${location.host}/v1/ws?${q}`;
  }

  async function connect() {
    clearTimeout(conn.timer);
    conn.timer = null;
    if (!state.token || conn.ws || conn.refreshing) return;
    // A dev token lives a day; get a new one before it runs out.
    if (tokenExpiry(state.token) - Date.now() < 60000) {
      conn.refreshing = true;
      try {
        await refreshToken();
      } catch {
        conn.refreshing = false;
        scheduleReconnect();
        return;
      }
      conn.refreshing = false;
      if (!state.token || conn.ws) return;
    }
    const ws = new WebSocket(wsUrl());
    conn.ws = ws;
    conn.connectingSince = Date.now();
    let opened = false;
    updateConnUi();
    setTimeout(updateConnUi, FIRST_CONNECT_GRACE_MS + 50);

    ws.onopen = () => {
      if (conn.ws !== ws) return;
      opened = true;
      conn.attempt = 0;
      conn.goawayAt = 0;
      conn.online = true;
      conn.everConnected = true;
      state.watched = "";
      updateConnUi();
      startHeartbeat(ws);
      syncNow();
      flushOutbox();
      refreshConversations();
      renderMessagesIfOpen();
      const conv = state.openConv && state.convs.get(state.openConv);
      if (conv && conv.historyState === "none") loadNewest(conv);
    };
    ws.onmessage = (event) => {
      if (conn.ws === ws) onFrame(ws, event.data);
    };
    ws.onerror = () => { /* onclose follows */ };
    ws.onclose = () => {
      if (conn.ws !== ws) return;
      conn.ws = null;
      conn.online = false;
      stopHeartbeat();
      failPending(new Error("disconnected"));
      if (!opened) checkCredentials();
      scheduleReconnect();
      updateConnUi();
      renderMessagesIfOpen();
    };
  }

  /** After a refused upgrade: was it the token? (Browsers hide the status.) */
  async function checkCredentials() {
    if (!state.token) return;
    try {
      const resp = await fetch("/v1/conversations", { headers: { Authorization: `Bearer ${state.token}` } });
      if (resp.status === 401) await refreshToken();
    } catch { /* the server is unreachable: keep backing off */ }
  }

  function scheduleReconnect() {
    if (!state.token || conn.ws || conn.timer) return;
    let delay;
    if (conn.goawayAt > Date.now()) {
      delay = conn.goawayAt - Date.now();
    } else {
      // Exponential backoff with "equal jitter": half fixed, half random.
      const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** conn.attempt);
      delay = ceiling / 2 + Math.random() * (ceiling / 2);
      conn.attempt += 1;
    }
    conn.goawayAt = 0;
    conn.nextAttemptAt = Date.now() + delay;
    conn.timer = setTimeout(() => {
      conn.timer = null;
      connect();
    }, delay);
    updateConnUi();
  }

  function reconnectNow() {
    if (!state.token || conn.ws) return;
    clearTimeout(conn.timer);
    conn.timer = null;
    conn.attempt = 0;
    connect();
  }

  function disconnect() {
    clearTimeout(conn.timer);
    conn.timer = null;
    stopHeartbeat();
    const ws = conn.ws;
    conn.ws = null;
    conn.online = false;
    failPending(new Error("signed out"));
    if (ws) ws.close(1000, "bye");
  }

  function startHeartbeat(ws) {
    stopHeartbeat();
    conn.pingTimer = setInterval(() => {
      if (conn.ws !== ws) return;
      // No pong in time means a dead socket: close it and reconnect.
      request({ type: "ping" }, 10000).catch(() => {
        if (conn.ws === ws) ws.close(4000, "ping timeout");
      });
    }, PING_EVERY_MS);
  }

  function stopHeartbeat() {
    clearInterval(conn.pingTimer);
    conn.pingTimer = null;
  }

  function request(frame, timeoutMs = REQUEST_TIMEOUT_MS) {
    const ws = conn.ws;
    if (!ws || !conn.online) return Promise.reject(new Error("not connected"));
    const rid = ++conn.rid;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        conn.pending.delete(rid);
        reject(new Error("timed out"));
        // A request that gets no answer means the socket is stuck.
        if (conn.ws === ws) ws.close(4000, "request timeout");
      }, timeoutMs);
      conn.pending.set(rid, { resolve, reject, timer });
      ws.send(JSON.stringify({ ...frame, rid }));
    });
  }

  // --------------------------------------------------------------- presence

  // Watches the peers of the direct chats (at most 100): asked again when
  // that list changes or after a reconnect; changes come as `presence`.
  async function watchPeers() {
    const peers = [...new Set([...state.convs.values()]
      .filter((c) => c.kind === "dm")
      .map((c) => c.members.find((m) => m !== state.user))
      .filter(Boolean))].sort().slice(0, 100);
    const key = peers.join(",");
    if (!peers.length || key === state.watched || !conn.online) return;
    state.watched = key;
    try {
      const reply = await request({ type: "presence", users: peers, watch: true });
      if (reply.type !== "presence_result") throw new Error(reply.message || reply.code);
      for (const p of reply.presence) state.presence.set(p.user, { online: p.online, last_seen: p.last_seen });
      renderConvList();
      renderChatHead();
    } catch (err) {
      state.watched = "";
      console.warn("presence failed:", err.message);
    }
  }

  function peerOf(conv) {
    return conv.kind === "dm" ? conv.members.find((m) => m !== state.user) : null;
  }

  function presenceText(user) {
    const p = state.presence.get(user);
    if (!p) return "";
    if (p.online) return "online";
    return p.last_seen ? `last seen ${new Date(p.last_seen).toLocaleTimeString()}` : "offline";
  }

  // ----------------------------------------------------------------- typing

  // Someone else types in a conversation: shown for a few seconds after
  // their last indicator (they come at most every 3 s while typing).
  function showTyping(frame) {
    if (typeof frame.conv_id !== "string" || typeof frame.from !== "string") return;
    if (!state.typing.has(frame.conv_id)) state.typing.set(frame.conv_id, new Map());
    state.typing.get(frame.conv_id).set(frame.from, Date.now() + TYPING_SHOWN_MS);
    renderTyping();
    setTimeout(renderTyping, TYPING_SHOWN_MS + 50);
  }

  function renderTyping() {
    const now = Date.now();
    const users = state.openConv && state.typing.get(state.openConv);
    const names = users ? [...users].filter(([, until]) => until > now).map(([user]) => user) : [];
    $("typing").textContent = !names.length ? ""
      : names.length === 1 ? `${names[0]} is typing...` : `${names.join(", ")} are typing...`;
  }

  // This tab types in the open conversation: tell the others, at most once
  // every 3 s per conversation (the server drops extra ones anyway).
  function sayTyping() {
    const conv = state.openConv;
    if (!conv || !conn.online || !conn.ws) return;
    const last = state.typingSent.get(conv) || 0;
    if (Date.now() - last < TYPING_EVERY_MS) return;
    state.typingSent.set(conv, Date.now());
    conn.ws.send(JSON.stringify({ type: "typing", conv_id: conv }));
  }

  function failPending(err) {
    for (const { reject, timer } of conn.pending.values()) {
      clearTimeout(timer);
      reject(err);
    }
    conn.pending.clear();
  }

  function onFrame(ws, data) {
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      return;
    }
    if (frame.rid !== undefined && conn.pending.has(frame.rid)) {
      const { resolve, timer } = conn.pending.get(frame.rid);
      conn.pending.delete(frame.rid);
      clearTimeout(timer);
      resolve(frame);
      return;
    }
    switch (frame.type) {
      case "notify":
        if (typeof frame.head === "number" && frame.head <= state.seq) break;
        if (takesInline(frame)) applyEntries(frame.entries.filter((e) => e.seq > state.seq));
        else syncNow();
        break;
      case "typing":
        showTyping(frame);
        break;
      case "presence":
        if (typeof frame.user === "string") {
          state.presence.set(frame.user, { online: !!frame.online, last_seen: frame.last_seen });
          renderConvList();
          renderChatHead();
        }
        break;
      case "goaway": {
        // The server is draining: reconnect after about that delay.
        const delay = Number(frame.reconnect_after_ms) || 0;
        conn.goawayAt = Date.now() + delay;
        setTimeout(() => {
          if (conn.ws === ws) ws.close(1000, "goaway");
        }, delay);
        updateConnUi();
        break;
      }
      case "error":
        console.warn("server error:", frame.code, frame.message);
        break;
      default:
        break;
    }
  }

  // ------------------------------------------------------------------- sync

  // A notify's entries are every entry above its `prev`: those above our
  // seq are all we lack, if `prev` reaches down to it. While a sync runs it
  // moves the seq itself; the notify then only asks for another round.
  function takesInline(frame) {
    return (
      !syncing &&
      Array.isArray(frame.entries) &&
      typeof frame.prev === "number" &&
      typeof frame.head === "number" &&
      frame.prev <= state.seq &&
      frame.entries.every((e) => typeof e.seq === "number")
    );
  }

  // Applies entries above the sync key in seq order and moves the key.
  function applyEntries(entries) {
    const touched = new Set();
    for (const entry of entries) {
      if (entry.seq <= state.seq) continue;
      applyEntry(entry);
      touched.add(entry.conv_id);
      state.seq = entry.seq;
    }
    if (touched.size) {
      storage.set("localStorage", seqKey(), String(state.seq));
      renderConvList();
      if (state.openConv && touched.has(state.openConv)) renderMessages();
      updateTitle();
    }
  }

  async function syncNow() {
    if (syncing) {
      syncAgain = true;
      return;
    }
    syncing = true;
    try {
      do {
        syncAgain = false;
        for (;;) {
          const reply = await request({ type: "sync", since: state.seq, limit: SYNC_LIMIT });
          if (reply.type !== "sync_result") {
            if (reply.code === "unavailable" || reply.code === "rate_limited") {
              await sleep(reply.retry_after_ms || 1000);
              continue;
            }
            throw new Error(reply.message || reply.code);
          }
          applyEntries(reply.entries);
          if (!reply.more) break;
        }
      } while (syncAgain);
      state.caughtUp = true;
    } catch (err) {
      // Disconnected or refused: the next connect syncs again from state.seq.
      console.warn("sync stopped:", err.message);
    } finally {
      syncing = false;
    }
  }

  // ------------------------------------------------------------------ sends

  function saveOutbox() {
    const items = state.outbox.map(({ cmid, conv_id, body }) => ({ cmid, conv_id, body }));
    storage.set("sessionStorage", outboxKey(), JSON.stringify(items));
  }

  function loadOutbox() {
    let items = [];
    try {
      items = JSON.parse(storage.get("sessionStorage", outboxKey()) || "[]");
    } catch { /* ignore */ }
    state.outbox = items.map((i) => ({ ...i, retries: 0 }));
    for (const item of state.outbox) {
      const msg = putMessage(ensureConv(item.conv_id), {
        from: state.user, client_msg_id: item.cmid, body: item.body, conv_seq: null,
      });
      msg.state = "sending";
    }
  }

  function dropFromOutbox(cmid) {
    const i = state.outbox.findIndex((item) => item.cmid === cmid);
    if (i >= 0) {
      state.outbox.splice(i, 1);
      saveOutbox();
    }
  }

  function queueSend(convId, body) {
    const cmid = "m-" + randomHex(12);
    const conv = ensureConv(convId);
    const msg = putMessage(conv, { from: state.user, client_msg_id: cmid, body, conv_seq: null });
    msg.state = "sending";
    state.outbox.push({ cmid, conv_id: convId, body, retries: 0 });
    saveOutbox();
    renderMessages({ stick: true });
    flushOutbox();
  }

  function outboxMessage(item) {
    return state.convs.get(item.conv_id)?.messages.get(msgKey(state.user, item.cmid));
  }

  /** Sends the outbox in order, one at a time, each until acked or refused. */
  async function flushOutbox() {
    if (flushing) return;
    flushing = true;
    try {
      while (state.outbox.length && conn.online) {
        const item = state.outbox[0];
        let reply;
        try {
          reply = await request({
            type: "send", client_msg_id: item.cmid, conv_id: item.conv_id, body: item.body,
          });
        } catch {
          break; // Disconnected: resent with the same client_msg_id after the reconnect.
        }
        const msg = outboxMessage(item);
        if (reply.type === "ack") {
          dropFromOutbox(item.cmid);
          if (msg) {
            putMessage(ensureConv(item.conv_id), {
              from: state.user, client_msg_id: item.cmid, body: item.body,
              conv_seq: reply.conv_seq, ts: reply.ts,
            });
          }
          renderConvList();
          if (state.openConv === item.conv_id) renderMessages();
          continue;
        }
        if (reply.type === "error" && (reply.code === "unavailable" || reply.code === "rate_limited")) {
          item.retries += 1;
          const backoff = Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** (item.retries - 1));
          const base = reply.code === "unavailable"
            ? Math.max(reply.retry_after_ms || 0, backoff)
            : reply.retry_after_ms || backoff;
          const wait = base + Math.random() * base * 0.2;
          if (msg) msg.note = `Retrying in ${Math.ceil(wait / 1000)} s`;
          if (state.openConv === item.conv_id) renderMessages();
          await sleep(wait);
          if (msg) msg.note = "";
          continue;
        }
        // Refused for good (bad_request, forbidden, too_large, ...).
        dropFromOutbox(item.cmid);
        if (msg) {
          msg.state = "failed";
          msg.note = `Not sent: ${reply.message || reply.code || "refused"}`;
        }
        if (state.openConv === item.conv_id) renderMessages();
      }
    } finally {
      flushing = false;
    }
    // A reconnect may have happened while this loop was finishing.
    if (state.outbox.length && conn.online) flushOutbox();
  }

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  // ---------------------------------------------------------------- history

  async function fetchPage(conv, before) {
    const q = new URLSearchParams({ limit: String(HISTORY_LIMIT) });
    if (before != null) q.set("before", String(before));
    const page = await api("GET", `/v1/conversations/${encodeURIComponent(conv.conv_id)}/messages?${q}`);
    for (const m of page.messages) putMessage(conv, m);
    conv.olderCursor = page.next_before;
    renderConvList();
    return page;
  }

  async function loadNewest(conv) {
    if (conv.historyState !== "none") return;
    conv.historyState = "loading";
    if (state.openConv === conv.conv_id) renderHistoryStatus();
    try {
      await fetchPage(conv, undefined);
      conv.historyState = "loaded";
    } catch (err) {
      conv.historyState = "none";
      if (state.openConv === conv.conv_id) $("history-status").textContent = `Could not load history: ${err.message}`;
      return;
    }
    if (state.openConv === conv.conv_id) {
      renderMessages({ stick: true });
      fillViewport(conv);
    }
  }

  async function loadOlder(conv) {
    if (conv.loadingOlder || conv.historyState !== "loaded" || conv.olderCursor == null) return;
    conv.loadingOlder = true;
    renderHistoryStatus();
    const box = $("messages");
    const before = box.scrollHeight - box.scrollTop;
    try {
      await fetchPage(conv, conv.olderCursor);
    } catch (err) {
      $("history-status").textContent = `Could not load older messages: ${err.message}`;
      return;
    } finally {
      conv.loadingOlder = false;
    }
    if (state.openConv !== conv.conv_id) return;
    renderMessages();
    // Keep the message that was at the top where it was.
    box.scrollTop = box.scrollHeight - before;
    fillViewport(conv);
  }

  /** Loads older pages until the list scrolls (or there is nothing older). */
  function fillViewport(conv) {
    const box = $("messages");
    if (state.openConv === conv.conv_id && box.scrollHeight <= box.clientHeight + 10) loadOlder(conv);
  }

  // -------------------------------------------------------------- rendering

  function fmtTime(ts) {
    const d = new Date(ts);
    const sameDay = d.toDateString() === new Date().toDateString();
    return sameDay
      ? d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })
      : d.toLocaleString([], { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
  }

  function messageElement(msg) {
    if (!msg.el) {
      const li = document.createElement("li");
      li.className = "msg";
      const meta = document.createElement("div");
      meta.className = "msg-meta";
      const from = document.createElement("span");
      from.className = "msg-from";
      const time = document.createElement("time");
      meta.append(from, time);
      const body = document.createElement("div");
      body.className = "msg-body";
      const status = document.createElement("div");
      status.className = "msg-status";
      const actions = document.createElement("div");
      actions.className = "msg-actions";
      const edit = document.createElement("button");
      edit.type = "button";
      edit.textContent = "Edit";
      edit.addEventListener("click", () => editMessage(msg));
      const recall = document.createElement("button");
      recall.type = "button";
      recall.textContent = "Recall";
      recall.addEventListener("click", () => changeMessage(msg, { type: "recall" }));
      actions.append(edit, recall);
      li.append(meta, body, status, actions);
      msg.el = li;
    }
    const li = msg.el;
    const mine = msg.from === state.user;
    li.classList.toggle("mine", mine);
    li.dataset.key = msg.key;
    if (msg.conv_seq != null) li.dataset.convSeq = String(msg.conv_seq);
    const [meta, body, status, actions] = li.children;
    meta.children[0].textContent = mine ? "You" : msg.from;
    const time = meta.children[1];
    if (msg.ts) {
      time.dateTime = new Date(msg.ts).toISOString();
      time.textContent = fmtTime(msg.ts);
    }
    body.textContent = msg.recalled ? "message recalled" : msg.body;
    li.classList.toggle("recalled", Boolean(msg.recalled));
    li.classList.toggle("edited", Boolean(msg.editedAt) && !msg.recalled);
    // The server has the last word on the windows; these only hide buttons
    // that could no longer work.
    const age = msg.ts ? Date.now() - msg.ts : Infinity;
    const changeable = mine && msg.conv_seq != null && !msg.recalled;
    actions.children[0].hidden = !(changeable && age < EDIT_WINDOW_MS);
    actions.children[1].hidden = !(changeable && age < RECALL_WINDOW_MS);
    actions.hidden = actions.children[0].hidden && actions.children[1].hidden;
    if (mine) {
      const st = msg.state || "sent";
      li.dataset.state = st;
      const conv = state.convs.get(state.openConv);
      const read = st === "sent" && conv && conv.kind === "dm" && msg.conv_seq <= conv.peerRead;
      li.dataset.read = String(Boolean(read));
      let text = read ? "Read" : st === "sent" ? "Sent" : st === "failed" ? "Not sent" : "Sending…";
      if (st === "sending" && !conn.online) text = "Waiting for connection…";
      if (msg.note) text = msg.note;
      status.textContent = text;
      status.hidden = false;
    } else {
      delete li.dataset.state;
      status.textContent = "";
      status.hidden = true;
    }
    return li;
  }

  /** Sends a recall or an edit of one's own message; its entry, once it
   * comes back through the inbox, changes the message in every view. */
  async function changeMessage(msg, change) {
    const frame = {
      ...change,
      client_msg_id: `${change.type}-${randomHex(8)}`,
      conv_id: state.openConv,
      ref: msg.conv_seq,
    };
    let refused;
    try {
      const reply = await request(frame);
      if (reply.type === "error") refused = reply.message || reply.code;
    } catch (err) {
      refused = err.message;
    }
    if (refused) {
      msg.note = `Could not ${change.type}: ${refused}`;
      renderMessagesIfOpen();
    }
  }

  function editMessage(msg) {
    const body = window.prompt("Edit your message", msg.body);
    if (body == null || body.trim() === "" || body === msg.body) return;
    changeMessage(msg, { type: "edit", body });
  }

  function renderHistoryStatus() {
    const conv = state.openConv && state.convs.get(state.openConv);
    const status = $("history-status");
    const older = $("load-older");
    if (!conv) {
      status.textContent = "";
      older.hidden = true;
      return;
    }
    if (conv.historyState === "loading" || conv.loadingOlder) {
      status.textContent = "Loading messages…";
      older.hidden = true;
    } else if (conv.historyState === "loaded" && conv.olderCursor == null) {
      status.textContent = conv.messages.size ? "Beginning of the conversation" : "No messages yet. Say hello!";
      older.hidden = true;
    } else if (conv.historyState === "loaded") {
      status.textContent = "";
      older.hidden = false;
    } else {
      status.textContent = "";
      older.hidden = true;
    }
  }

  function renderMessages({ stick = false } = {}) {
    const list = $("message-list");
    const box = $("messages");
    const conv = state.openConv && state.convs.get(state.openConv);
    const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 80;
    let prev = null;
    if (conv) {
      for (const msg of sortedMessages(conv)) {
        const el = messageElement(msg);
        const want = prev ? prev.nextSibling : list.firstChild;
        if (want !== el) list.insertBefore(el, want);
        prev = el;
      }
    }
    while (prev ? prev.nextSibling : list.firstChild) {
      (prev ? prev.nextSibling : list.firstChild).remove();
    }
    renderHistoryStatus();
    if (stick || atBottom) box.scrollTop = box.scrollHeight;
    if (conv && conv.unread && chatVisible(conv.conv_id)) {
      conv.unread = 0;
      renderConvList();
      updateTitle();
    }
    if (conv && chatVisible(conv.conv_id)) markRead(conv);
  }

  function renderMessagesIfOpen() {
    if (state.openConv) renderMessages();
  }

  function renderConvList() {
    const list = $("conv-list");
    const focused = list.contains(document.activeElement) ? document.activeElement.dataset.convId : null;
    const convs = Array.from(state.convs.values())
      .filter((c) => c.known || c.messages.size || c.conv_id === state.openConv)
      .sort((a, b) => b.lastTs - a.lastTs || convName(a).localeCompare(convName(b)));
    list.replaceChildren(...convs.map((conv) => {
      const li = document.createElement("li");
      const button = document.createElement("button");
      button.type = "button";
      button.dataset.convId = conv.conv_id;
      if (conv.conv_id === state.openConv) button.setAttribute("aria-current", "true");
      const name = document.createElement("span");
      name.className = "conv-name";
      name.textContent = (conv.kind === "group" ? "# " : "") + convName(conv);
      button.append(name);
      let label = convName(conv) + (conv.kind === "group" ? " (group)" : "");
      const peer = peerOf(conv);
      if (peer && state.presence.has(peer)) {
        const online = state.presence.get(peer).online;
        const dot = document.createElement("span");
        dot.className = "presence-dot" + (online ? " online" : "");
        dot.title = presenceText(peer);
        button.append(dot);
        label += online ? ", online" : "";
      }
      if (conv.unread) {
        const badge = document.createElement("span");
        badge.className = "badge";
        badge.textContent = String(conv.unread);
        button.append(badge);
        label += `, ${conv.unread} unread`;
      }
      const preview = document.createElement("span");
      preview.className = "conv-preview";
      preview.textContent = conv.lastBody || (conv.kind === "group" ? conv.members.join(", ") : "");
      button.append(preview);
      button.setAttribute("aria-label", label);
      button.addEventListener("click", () => openConversation(conv.conv_id));
      li.append(button);
      return li;
    }));
    $("conv-empty").hidden = convs.length > 0;
    if (focused) list.querySelector(`button[data-conv-id="${CSS.escape(focused)}"]`)?.focus();
  }

  function renderChatHead() {
    const conv = state.openConv && state.convs.get(state.openConv);
    $("chat-title").textContent = conv ? (conv.kind === "group" ? "# " : "") + convName(conv) : "No conversation open";
    const seen = conv && peerOf(conv) ? presenceText(peerOf(conv)) : "";
    $("chat-sub").textContent = !conv ? "Pick a conversation, open a direct chat or create a group."
      : conv.kind === "group" ? `Group: ${conv.members.join(", ")}` : "Direct chat" + (seen ? ` · ${seen}` : "");
    $("composer-input").disabled = !conv;
    $("composer-send").disabled = !conv;
    renderTyping();
  }

  function updateTitle() {
    let unread = 0;
    for (const conv of state.convs.values()) unread += conv.unread;
    document.title = (unread ? `(${unread}) ` : "") + (state.user ? `Chat - ${state.user}` : "Chat");
  }

  function updateConnUi() {
    const banner = $("banner");
    const signedIn = Boolean(state.token);
    const connEl = $("conn");
    const connecting = Boolean(conn.ws) && !conn.online;
    connEl.dataset.state = conn.online ? "online" : connecting ? "connecting" : "offline";
    $("conn-text").textContent = conn.online ? "Online" : connecting ? "Connecting…" : "Offline";
    const show = signedIn && !conn.online
      && (conn.everConnected || conn.attempt > 0 || Date.now() - conn.connectingSince > FIRST_CONNECT_GRACE_MS);
    if (show) {
      let text;
      if (connecting) text = "Disconnected from the server. Connecting…";
      else if (conn.timer) {
        const secs = Math.max(1, Math.ceil((conn.nextAttemptAt - Date.now()) / 1000));
        text = `Disconnected from the server. Reconnecting in ${secs} s…`;
      } else text = "Disconnected from the server.";
      const waiting = state.outbox.length;
      if (waiting) text += ` ${waiting} message${waiting === 1 ? "" : "s"} will be sent when back online.`;
      if ($("banner-text").textContent !== text) $("banner-text").textContent = text;
      $("banner-retry").hidden = connecting;
    }
    banner.hidden = !show;
    // Announce each change of connection state once (not the countdown).
    const announce = show ? "Disconnected from the server. Reconnecting automatically."
      : conn.online && conn.announcedOffline ? "Connected again." : null;
    if (announce && announce !== conn.announced) {
      $("live").textContent = announce;
      conn.announced = announce;
      conn.announcedOffline = show;
    }
  }

  // ------------------------------------------------------------ navigation

  function openConversation(convId, { focus = true } = {}) {
    const conv = ensureConv(convId);
    state.openConv = convId;
    storage.set("sessionStorage", "chat.open", convId);
    conv.unread = 0;
    $("app").classList.add("chat-open");
    renderChatHead();
    renderConvList();
    updateTitle();
    $("message-list").replaceChildren();
    renderMessages({ stick: true });
    $("composer-error").textContent = "";
    if (focus) $("composer-input").focus();
    if (conv.historyState === "none") loadNewest(conv);
    else fillViewport(conv);
  }

  function closeConversation() {
    state.openConv = null;
    storage.remove("sessionStorage", "chat.open");
    $("app").classList.remove("chat-open");
    renderChatHead();
    renderConvList();
    renderMessages();
    const first = $("conv-list").querySelector("button");
    (first || $("dm-user")).focus();
  }

  // ---------------------------------------------------------- sign in / out

  function saveSession() {
    storage.set("sessionStorage", "chat.session", JSON.stringify({ user: state.user, token: state.token }));
  }

  function startSession(user, token) {
    state.user = user;
    state.token = token;
    state.seq = Number(storage.get("localStorage", seqKey())) || 0;
    state.convs = new Map();
    state.openConv = null;
    state.caughtUp = false;
    saveSession();
    loadOutbox();
    $("me-name").textContent = user;
    $("signin-view").hidden = true;
    $("app").hidden = false;
    renderChatHead();
    renderConvList();
    updateTitle();
    refreshConversations();
    connect();
    const open = storage.get("sessionStorage", "chat.open");
    if (open) openConversation(open, { focus: false });
    else $("dm-user").focus();
  }

  async function signIn(event) {
    event.preventDefault();
    const user = $("signin-user").value.trim();
    const error = $("signin-error");
    if (!USER_RE.test(user)) {
      error.textContent = "Enter a user name of 1-64 letters, digits, _ . or -, starting with a letter or digit.";
      $("signin-user").setAttribute("aria-invalid", "true");
      $("signin-user").focus();
      return;
    }
    $("signin-user").removeAttribute("aria-invalid");
    error.textContent = "";
    $("signin-submit").disabled = true;
    try {
      startSession(user, await mintToken(user));
    } catch (err) {
      error.textContent = err.message === "Failed to fetch" ? "The server cannot be reached." : err.message;
    } finally {
      $("signin-submit").disabled = false;
    }
  }

  function signOut() {
    disconnect();
    state.token = null;
    state.user = null;
    state.convs = new Map();
    state.openConv = null;
    state.outbox = [];
    storage.remove("sessionStorage", "chat.session");
    storage.remove("sessionStorage", "chat.open");
    $("app").hidden = true;
    $("app").classList.remove("chat-open");
    $("signin-view").hidden = false;
    $("message-list").replaceChildren();
    updateConnUi();
    updateTitle();
    $("signin-user").focus();
  }

  // ---------------------------------------------------------------- actions

  function openDm(event) {
    event.preventDefault();
    const peer = $("dm-user").value.trim();
    const error = $("dm-error");
    if (!USER_RE.test(peer)) {
      error.textContent = "Enter a valid user name.";
      return;
    }
    if (peer === state.user) {
      error.textContent = "That is you: pick another user.";
      return;
    }
    error.textContent = "";
    $("dm-user").value = "";
    openConversation(dmId(state.user, peer));
  }

  async function createGroup(event) {
    event.preventDefault();
    const error = $("group-error");
    const title = $("group-title").value.trim();
    const members = $("group-members").value.split(/[\s,]+/).filter(Boolean);
    const bad = members.find((m) => !USER_RE.test(m));
    if (bad) {
      error.textContent = `Not a valid user name: ${bad}`;
      return;
    }
    if (!members.length) {
      error.textContent = "Name at least one member.";
      return;
    }
    error.textContent = "";
    try {
      const conv = mergeConv(await api("POST", "/v1/conversations", { members, title: title || null }));
      $("group-title").value = "";
      $("group-members").value = "";
      $("group-details").open = false;
      openConversation(conv.conv_id);
    } catch (err) {
      error.textContent = `Could not create the group: ${err.message === "Failed to fetch" ? "the server cannot be reached" : err.message}`;
    }
  }

  function submitComposer(event) {
    event.preventDefault();
    if (!state.openConv) return;
    const input = $("composer-input");
    const body = input.value;
    const error = $("composer-error");
    if (!body.trim()) return;
    if (new TextEncoder().encode(body).length > MAX_BODY_BYTES) {
      error.textContent = "This message is too long (16 KiB at most).";
      return;
    }
    error.textContent = "";
    input.value = "";
    queueSend(state.openConv, body);
    input.focus();
  }

  // ------------------------------------------------------------------ start

  function init() {
    $("signin-form").addEventListener("submit", signIn);
    $("signout").addEventListener("click", signOut);
    $("dm-form").addEventListener("submit", openDm);
    $("group-form").addEventListener("submit", createGroup);
    $("composer").addEventListener("submit", submitComposer);
    $("composer-input").addEventListener("keydown", (e) => {
      if (e.key === "Enter" && !e.shiftKey && !e.isComposing) submitComposer(e);
    });
    $("composer-input").addEventListener("input", sayTyping);
    $("back").addEventListener("click", closeConversation);
    $("banner-retry").addEventListener("click", reconnectNow);
    $("load-older").addEventListener("click", () => {
      const conv = state.openConv && state.convs.get(state.openConv);
      if (conv) loadOlder(conv);
    });
    $("messages").addEventListener("scroll", () => {
      const conv = state.openConv && state.convs.get(state.openConv);
      if (conv && $("messages").scrollTop < 60) loadOlder(conv);
    });
    window.addEventListener("online", reconnectNow);
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState !== "visible") return;
      if (!conn.ws) reconnectNow();
      renderMessagesIfOpen();
    });
    setInterval(updateConnUi, 1000);

    let saved = null;
    try {
      saved = JSON.parse(storage.get("sessionStorage", "chat.session") || "null");
    } catch { /* ignore */ }
    if (saved && saved.user && USER_RE.test(saved.user) && saved.token) {
      startSession(saved.user, saved.token);
    } else {
      $("signin-view").hidden = false;
      $("signin-user").focus();
    }
  }

  init();
})();
