// quipfeed's embeddable chat widget. One <script src=".../widget.js" data-persona="quip" async>
// adds a launcher button; the chat lives in a shadow root so the host page's styles and ours
// never mix. No framework: a small state object and render functions that rebuild DOM with
// textContent (untrusted text) or sanitised Markdown (renderMarkdown), never raw innerHTML.
import { Api, ApiError } from "./api.js";
import { renderMarkdown, safeHref } from "./markdown.js";
import { STYLES } from "./styles.js";

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "text") el.textContent = v;
    else if (k === "html") el.innerHTML = v; // only ever given renderMarkdown's output
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) if (c !== null && c !== undefined && c !== false) el.append(c);
  return el;
}

function chatIcon() {
  // Drawn, not an emoji: emoji fonts are missing on many systems.
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("width", "26");
  svg.setAttribute("height", "26");
  svg.setAttribute("aria-hidden", "true");
  const path = document.createElementNS(ns, "path");
  path.setAttribute("fill", "currentColor");
  path.setAttribute("d", "M4 3h16a2 2 0 0 1 2 2v11a2 2 0 0 1-2 2H9l-5 4v-4H4a2 2 0 0 1-2-2V5a2 2 0 0 1 2-2zm3 6.5a1.5 1.5 0 1 0 0 .01zm5 0a1.5 1.5 0 1 0 0 .01zm5 0a1.5 1.5 0 1 0 0 .01z");
  svg.append(path);
  return svg;
}

function relTime(iso) {
  const t = Date.parse(iso);
  if (!t) return "";
  const s = (Date.now() - t) / 1000;
  if (s < 60) return "just now";
  if (s < 3600) return Math.floor(s / 60) + " min ago";
  if (s < 86400) return Math.floor(s / 3600) + " h ago";
  if (s < 86400 * 30) return Math.floor(s / 86400) + " d ago";
  return new Date(t).toISOString().slice(0, 10);
}

function config(script) {
  const d = (script && script.dataset) || {};
  let base = d.api || "";
  if (!base && script && script.src) base = new URL(script.src, location.href).origin;
  if (!base) base = location.origin;
  const color = d.color && window.CSS && CSS.supports("color", d.color) ? d.color : null;
  return {
    base, persona: d.persona || null, theme: d.theme || "light", color,
    title: d.title || "quipfeed", open: d.open === "true",
  };
}

class Widget {
  constructor(cfg) {
    this.cfg = cfg;
    this.api = new Api(cfg.base);
    this.state = {
      conversations: [], current: null, personas: [], persona: cfg.persona,
      streaming: null, editing: null, drawer: null, status: "", error: false,
    };
    this.metrics = { sendAt: 0, firstTokenPaintedAt: 0, firstTokenAt: 0 };
    this.mount();
  }

  // ---- mounting ----

  mount() {
    this.host = h("div", { id: "quipfeed-widget", "data-quipfeed": "" });
    this.shadow = this.host.attachShadow({ mode: "open" });
    this.shadow.append(h("style", { text: STYLES }));
    const dark = this.cfg.theme === "dark" ||
      (this.cfg.theme === "auto" && window.matchMedia && matchMedia("(prefers-color-scheme: dark)").matches);
    this.root = h("div", { class: "root" + (dark ? " dark" : "") });
    if (this.cfg.color) this.root.style.setProperty("--accent", this.cfg.color);
    this.launcher = h("button", {
      class: "launcher", type: "button", "aria-label": "Open " + this.cfg.title + " chat",
      "aria-expanded": "false", "aria-controls": "qf-panel", onclick: () => this.toggle(),
    }, chatIcon());
    this.panel = h("section", {
      class: "panel", id: "qf-panel", role: "dialog", "aria-label": this.cfg.title + " chat", hidden: true,
      onkeydown: (e) => { if (e.key === "Escape") { this.toggle(false); } },
    });
    this.root.append(this.launcher, this.panel);
    this.shadow.append(this.root);
    document.body.append(this.host);
    this.buildPanel();
    if (this.cfg.open) this.toggle(true);
  }

  buildPanel() {
    this.personaSelect = h("select", { "aria-label": "Persona", onchange: () => this.switchPersona() });
    this.titleEl = h("h2", { text: this.cfg.title });
    const header = h("header", {},
      this.titleEl, this.personaSelect,
      h("button", { class: "icon", type: "button", "aria-label": "Conversations", title: "Conversations",
        onclick: () => this.showDrawer("conversations") }, "☰"),
      h("button", { class: "icon", type: "button", "aria-label": "Trending now", title: "Trending now",
        onclick: () => this.showDrawer("trending") }, "★"),
      h("button", { class: "icon", type: "button", "aria-label": "New conversation", title: "New conversation",
        onclick: () => this.newConversation() }, "+"),
      h("button", { class: "icon", type: "button", "aria-label": "Close chat", title: "Close",
        onclick: () => this.toggle(false) }, "✕"));
    this.drawer = h("div", { class: "drawer", hidden: true });
    this.log = h("div", { class: "log", role: "log", "aria-live": "polite", "aria-label": "Messages" });
    this.chips = h("div", { class: "chips", role: "group", "aria-label": "Suggested follow-ups" });
    this.statusEl = h("div", { class: "status", role: "status" });
    this.input = h("textarea", {
      rows: "1", "aria-label": "Message", placeholder: "Ask what the feed is saying…", maxlength: "4000",
      onkeydown: (e) => { if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); this.submit(); } },
    });
    this.sendBtn = h("button", { class: "send", type: "submit", "aria-label": "Send" }, "Send");
    const form = h("form", { class: "composer", onsubmit: (e) => { e.preventDefault(); this.submit(); } },
      this.input, this.sendBtn);
    this.panel.append(header, this.drawer, this.log, this.chips, this.statusEl, form);
  }

  async toggle(force) {
    const open = force === undefined ? this.panel.hidden : force;
    this.panel.hidden = !open;
    this.launcher.setAttribute("aria-expanded", String(open));
    this.launcher.setAttribute("aria-label", (open ? "Close " : "Open ") + this.cfg.title + " chat");
    if (open) {
      if (!this.started) { this.started = true; await this.start(); }
      this.input.focus();
    } else {
      this.launcher.focus();
    }
  }

  async start() {
    try {
      const [personas, convs] = await Promise.all([
        this.api.json("GET", "/v1/personas"), this.api.json("GET", "/v1/conversations")]);
      this.state.personas = personas;
      this.state.conversations = convs;
      this.renderPersonas();
      if (convs.length) await this.openConversation(convs[0].id);
      else this.render();
    } catch (e) { this.fail(e); }
  }

  // ---- state changes ----

  setStatus(text, error) {
    this.state.status = text || "";
    this.statusEl.textContent = this.state.status;
    this.statusEl.classList.toggle("error", !!error);
  }

  fail(e) { this.setStatus(e instanceof ApiError || e instanceof Error ? e.message : String(e), true); }

  async refreshList() { this.state.conversations = await this.api.json("GET", "/v1/conversations"); }

  async openConversation(id) {
    this.state.current = await this.api.json("GET", "/v1/conversations/" + encodeURIComponent(id));
    this.state.persona = this.state.current.persona || this.state.persona;
    this.state.editing = null;
    this.renderPersonas();
    this.render();
  }

  async newConversation() {
    this.state.current = null;
    this.state.editing = null;
    this.setStatus("");
    this.render();
    this.input.focus();
  }

  async ensureConversation() {
    if (this.state.current) return this.state.current.id;
    const conv = await this.api.json("POST", "/v1/conversations", { persona: this.state.persona || null });
    this.state.current = Object.assign({ messages: [] }, conv);
    return conv.id;
  }

  async switchPersona() {
    this.state.persona = this.personaSelect.value;
    if (this.state.current) {
      try {
        await this.api.json("PATCH", "/v1/conversations/" + encodeURIComponent(this.state.current.id),
          { persona: this.state.persona });
        this.state.current.persona = this.state.persona;
      } catch (e) { this.fail(e); }
    }
  }

  async submit(textArg) {
    const text = (textArg !== undefined ? textArg : this.input.value).trim();
    if (!text || this.state.streaming) return;
    this.input.value = "";
    try {
      const id = await this.ensureConversation();
      this.state.current.messages.push({ id: "pending-q", role: "user", content: text, version: 1, versions: 1, sibling_ids: [] });
      await this.stream("POST", "/v1/conversations/" + encodeURIComponent(id) + "/messages",
        { text, persona: this.state.persona || null });
    } catch (e) { this.fail(e); }
  }

  async regenerate(message) {
    const cid = this.state.current.id;
    const idx = this.state.current.messages.indexOf(message);
    this.state.current.messages = this.state.current.messages.slice(0, idx);
    await this.stream("POST", `/v1/conversations/${encodeURIComponent(cid)}/messages/${encodeURIComponent(message.id)}/regenerate`);
  }

  async saveEdit(message, text) {
    const cid = this.state.current.id;
    const idx = this.state.current.messages.indexOf(message);
    this.state.editing = null;
    const keep = this.state.current.messages.slice(0, message.role === "user" ? idx : idx);
    if (message.role === "user") keep.push({ id: "pending-q", role: "user", content: text, version: 1, versions: 1, sibling_ids: [] });
    this.state.current.messages = keep;
    await this.stream("POST", `/v1/conversations/${encodeURIComponent(cid)}/messages/${encodeURIComponent(message.id)}/edit`, { text });
  }

  async selectVersion(message, delta) {
    const ids = message.sibling_ids || [];
    const target = ids[ids.indexOf(message.id) + delta];
    if (!target || this.state.streaming) return;
    try {
      this.state.current = await this.api.json("POST",
        `/v1/conversations/${encodeURIComponent(this.state.current.id)}/messages/${encodeURIComponent(target)}/select`);
      this.render();
    } catch (e) { this.fail(e); }
  }

  async feedback(message, rating, button) {
    try {
      await this.api.json("POST",
        `/v1/conversations/${encodeURIComponent(this.state.current.id)}/messages/${encodeURIComponent(message.id)}/feedback`,
        { rating, note: "" });
      button.setAttribute("aria-pressed", "true");
      this.setStatus("Thanks for the feedback.");
    } catch (e) { this.fail(e); }
  }

  async stop() {
    const s = this.state.streaming;
    if (!s) return;
    s.stopped = true;
    if (s.turnId) {
      try { await this.api.json("POST", "/v1/turns/" + encodeURIComponent(s.turnId) + "/stop"); } catch (e) { /* gone */ }
    }
    if (s.handlers.abort) s.handlers.abort();
  }

  // One streamed turn: tokens paint as they come; on done the conversation is reloaded so ids,
  // versions, citations and suggestions come from the server's stored tree.
  async stream(method, path, body) {
    const s = { text: "", notice: "", citations: [], suggestions: [], turnId: null, stopped: false, handlers: {} };
    this.state.streaming = s;
    this.metrics = { sendAt: performance.now(), firstTokenAt: 0, firstTokenPaintedAt: 0 };
    this.setStatus("");
    this.render();
    s.handlers.on = (event, data) => {
      if (event === "turn") s.turnId = data.turn_id;
      else if (event === "notice") { s.notice = data.text || ""; this.paintStreaming(); }
      else if (event === "token") {
        if (!this.metrics.firstTokenAt) {
          this.metrics.firstTokenAt = performance.now();
          requestAnimationFrame(() => { this.metrics.firstTokenPaintedAt = performance.now(); });
        }
        s.text += data.text || "";
        this.paintStreaming();
      } else if (event === "citations") { s.citations = data.citations || []; this.paintStreaming(); }
      else if (event === "suggestions") { s.suggestions = data.suggestions || []; }
      else if (event === "reconnecting") this.setStatus("Connection lost — reconnecting…");
      else if (event === "reconnected") this.setStatus("");
      else if (event === "error") this.setStatus(data.message || "Something went wrong.", true);
      else if (event === "stopped") this.setStatus("Stopped.");
    };
    try {
      await this.api.turn(method, path, body, s.handlers);
    } catch (e) {
      if (!s.stopped) this.fail(e);
    }
    this.state.streaming = null;
    const cid = this.state.current && this.state.current.id;
    try {
      await this.refreshList();
      if (cid && !s.stopped) await this.openConversation(cid);
      else this.render(s);
    } catch (e) { this.fail(e); this.render(); }
    if (s.stopped) this.setStatus("Stopped.");
  }

  showDrawer(which) {
    this.state.drawer = this.state.drawer === which ? null : which;
    this.renderDrawer();
  }

  // ---- rendering ----

  renderPersonas() {
    const sel = this.personaSelect;
    sel.textContent = "";
    for (const p of this.state.personas) {
      sel.append(h("option", { value: p.name, title: p.description, text: p.name }));
    }
    const want = (this.state.current && this.state.current.persona) || this.state.persona;
    if (want) sel.value = want;
    if (!this.state.persona && sel.value) this.state.persona = sel.value;
  }

  async renderDrawer() {
    const d = this.drawer;
    d.textContent = "";
    d.hidden = !this.state.drawer;
    if (this.state.drawer === "conversations") {
      d.append(h("h3", { text: "Conversations" }));
      if (!this.state.conversations.length) d.append(h("p", { text: "No conversations yet." }));
      for (const c of this.state.conversations) {
        const current = this.state.current && this.state.current.id === c.id;
        d.append(h("div", { class: "conv" },
          h("button", { class: "open", type: "button", "aria-current": current ? "true" : "false", text: c.title,
            onclick: async () => { this.state.drawer = null; this.renderDrawer(); await this.openConversation(c.id); } }),
          h("button", { class: "tool", type: "button", "aria-label": "Rename " + c.title, onclick: () => this.rename(c) }, "✎"),
          h("button", { class: "tool", type: "button", "aria-label": "Delete " + c.title, onclick: () => this.remove(c) }, "✕")));
      }
    } else if (this.state.drawer === "trending") {
      d.append(h("h3", { text: "Trending now" }));
      const box = h("div", { "aria-busy": "true", text: "Loading…" });
      d.append(box);
      try {
        const items = await this.api.json("GET", "/v1/trending?limit=8");
        box.textContent = "";
        if (!items.length) box.textContent = "Nothing trending right now.";
        for (const t of items) {
          box.append(h("div", { class: "trend" },
            h("button", { class: "chip", type: "button", text: t.label, onclick: () => { this.showDrawer(null); this.submit("What are people saying about " + t.label + "?"); } }),
            h("span", { class: "when", text: " " + t.posts + " posts · " + (t.growth ? "×" + t.growth : "new") })));
        }
      } catch (e) {
        box.textContent = e.status === 503 ? "Trending isn't available on this server yet." : e.message;
      }
      box.removeAttribute("aria-busy");
    }
  }

  async rename(c) {
    const title = window.prompt("Rename conversation", c.title);
    if (!title || !title.trim()) return;
    try {
      await this.api.json("PATCH", "/v1/conversations/" + encodeURIComponent(c.id), { title: title.trim() });
      await this.refreshList();
      if (this.state.current && this.state.current.id === c.id) this.state.current.title = title.trim();
      this.renderDrawer();
      this.render();
    } catch (e) { this.fail(e); }
  }

  async remove(c) {
    try {
      await this.api.json("DELETE", "/v1/conversations/" + encodeURIComponent(c.id));
      await this.refreshList();
      if (this.state.current && this.state.current.id === c.id) this.state.current = null;
      this.renderDrawer();
      this.render();
    } catch (e) { this.fail(e); }
  }

  cards(citations) {
    if (!citations || !citations.length) return null;
    return h("div", { class: "cards", role: "list", "aria-label": "Cited posts" },
      citations.map((c) => {
        const href = safeHref(c.url);
        const who = (c.author_name ? c.author_name + " " : "") + (c.author ? "@" + c.author : "unknown");
        return h("article", { class: "card", role: "listitem", "aria-label": "Post " + c.number + " by " + who },
          h("div", {}, h("span", { class: "who", text: "[" + c.number + "] " + who }),
            h("time", { class: "when", datetime: c.created_at, text: relTime(c.created_at) })),
          h("div", { class: "text", text: c.text }),
          href ? h("a", { href, target: "_blank", rel: "noopener nofollow", text: "Open post ↗" }) : null);
      }));
  }

  // A server notice (e.g. the live feed is unreachable): plain text, never Markdown or HTML.
  noticeEl(text) {
    if (!text) return null;
    return h("p", { class: "notice", role: "note", text });
  }

  messageEl(m, isLast) {
    const el = h("div", { class: "msg " + m.role, "data-id": m.id, "data-role": m.role });
    if (this.state.editing === m.id) {
      el.append(this.editor(m));
      return el;
    }
    const label = m.role === "user" ? "You said" : (m.persona || this.state.persona || "quipfeed") + " said";
    el.append(h("div", { class: "sr", text: label }));
    if (m.role === "assistant") el.append(this.noticeEl(m.notice) || "");
    el.append(h("div", { class: "bubble", html: renderMarkdown(m.content) }));
    if (m.role === "assistant") el.append(this.cards(m.citations) || "");
    if (m.id === "pending-q") return el;
    const tools = h("div", { class: "tools", role: "toolbar", "aria-label": "Message actions" });
    if ((m.versions || 1) > 1) {
      tools.append(
        h("button", { class: "tool", type: "button", "aria-label": "Previous version", disabled: m.version <= 1,
          onclick: () => this.selectVersion(m, -1) }, "◀"),
        h("span", { class: "version", "aria-label": `Version ${m.version} of ${m.versions}`, text: `${m.version}/${m.versions}` }),
        h("button", { class: "tool", type: "button", "aria-label": "Next version", disabled: m.version >= m.versions,
          onclick: () => this.selectVersion(m, +1) }, "▶"));
    }
    tools.append(h("button", { class: "tool", type: "button", "aria-label": "Edit", onclick: () => { this.state.editing = m.id; this.render(); } }, "✎ Edit"));
    tools.append(h("button", { class: "tool", type: "button", "aria-label": "Copy", onclick: (e) => this.copy(m.content, e.currentTarget) }, "Copy"));
    if (m.role === "assistant") {
      tools.append(h("button", { class: "tool", type: "button", "aria-label": "Regenerate", onclick: () => this.regenerate(m) }, "↻ Regenerate"));
      const up = h("button", { class: "tool", type: "button", "aria-label": "Good answer", "aria-pressed": "false" }, "▲");
      const down = h("button", { class: "tool", type: "button", "aria-label": "Bad answer", "aria-pressed": "false" }, "▼");
      up.addEventListener("click", () => this.feedback(m, "up", up));
      down.addEventListener("click", () => this.feedback(m, "down", down));
      tools.append(up, down);
    }
    el.append(tools);
    return el;
  }

  editor(m) {
    const area = h("textarea", { "aria-label": m.role === "user" ? "Edit question (Markdown)" : "Edit answer (Markdown)" });
    area.value = m.content;
    const preview = h("div", { class: "preview bubble", "aria-label": "Preview", html: renderMarkdown(m.content) });
    area.addEventListener("input", () => { preview.innerHTML = renderMarkdown(area.value); });
    area.addEventListener("keydown", (e) => { if (e.key === "Escape") { e.stopPropagation(); this.state.editing = null; this.render(); } });
    setTimeout(() => area.focus(), 0);
    return h("div", { class: "editor" }, area, preview, h("div", { class: "row" },
      h("button", { type: "button", onclick: () => { this.state.editing = null; this.render(); } }, "Cancel"),
      h("button", { type: "button", class: "primary", onclick: () => { if (area.value.trim()) this.saveEdit(m, area.value); } },
        m.role === "user" ? "Save & ask" : "Save & continue")));
  }

  async copy(text, button) {
    try {
      await navigator.clipboard.writeText(text);
      button.textContent = "✓ Copied";
    } catch (e) {
      button.textContent = "Copy failed";
    }
    setTimeout(() => { button.textContent = "Copy"; }, 1500);
  }

  render(partial) {
    const conv = this.state.current;
    this.titleEl.textContent = conv ? conv.title : this.cfg.title;
    this.log.textContent = "";
    const msgs = conv ? conv.messages : [];
    if (!msgs.length && !this.state.streaming) {
      this.log.append(h("p", { class: "status", text: "Ask me what the feed is saying about anything." }));
    }
    msgs.forEach((m, i) => this.log.append(this.messageEl(m, i === msgs.length - 1)));
    const s = this.state.streaming || partial;
    if (s) {
      this.streamEl = h("div", { class: "msg assistant", "data-role": "assistant", "data-streaming": this.state.streaming ? "true" : "false" },
        this.noticeEl(s.notice),
        h("div", { class: "bubble" + (this.state.streaming ? " cursor" : ""), html: renderMarkdown(s.text) }));
      this.log.append(this.streamEl);
    } else {
      this.streamEl = null;
    }
    this.renderChips();
    this.renderComposer();
    this.log.scrollTop = this.log.scrollHeight;
  }

  paintStreaming() {
    // Tokens arrive faster than frames; coalesce repaints to one per animation frame.
    if (this.paintQueued) return;
    this.paintQueued = true;
    requestAnimationFrame(() => {
      this.paintQueued = false;
      const s = this.state.streaming;
      if (!s || !this.streamEl) return;
      const bubble = this.streamEl.querySelector(".bubble");
      if (s.notice && !this.streamEl.querySelector(".notice")) this.streamEl.insertBefore(this.noticeEl(s.notice), bubble);
      bubble.innerHTML = renderMarkdown(s.text);
      const old = this.streamEl.querySelector(".cards");
      if (old) old.remove();
      const cards = this.cards(s.citations);
      if (cards) this.streamEl.append(cards);
      this.log.scrollTop = this.log.scrollHeight;
    });
  }

  renderChips() {
    this.chips.textContent = "";
    const msgs = this.state.current ? this.state.current.messages : [];
    const last = msgs[msgs.length - 1];
    if (this.state.streaming || !last || last.role !== "assistant") return;
    for (const q of last.suggestions || []) {
      this.chips.append(h("button", { class: "chip", type: "button", text: q, onclick: () => this.submit(q) }));
    }
  }

  renderComposer() {
    const streaming = !!this.state.streaming;
    this.sendBtn.textContent = streaming ? "Stop" : "Send";
    this.sendBtn.setAttribute("aria-label", streaming ? "Stop generating" : "Send");
    this.sendBtn.type = streaming ? "button" : "submit";
    this.sendBtn.onclick = streaming ? (e) => { e.preventDefault(); this.stop(); } : null;
  }
}

function boot(script) {
  if (window.quipfeed && window.quipfeed.widget) return;
  const widget = new Widget(config(script));
  window.quipfeed = {
    widget,
    open: () => widget.toggle(true),
    close: () => widget.toggle(false),
    ask: (text) => widget.submit(text),
    metrics: () => Object.assign({}, widget.metrics),
    renderMarkdown,
  };
  window.dispatchEvent(new CustomEvent("quipfeed:ready"));
}

// currentScript is only set while this file first runs (async scripts included): read it now,
// build the DOM once the body exists.
const script = document.currentScript ||
  document.querySelector('script[src*="widget.js"][data-persona], script[src*="widget.js"]');
if (document.body) boot(script);
else document.addEventListener("DOMContentLoaded", () => boot(script));
