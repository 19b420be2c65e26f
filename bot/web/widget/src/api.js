// The HTTP API: a session token kept in localStorage, JSON calls, and turns streamed as SSE
// that resume after a dropped connection (GET /v1/turns/{id}/events with Last-Event-ID).
import { createParser } from "eventsource-parser";

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export class Api {
  constructor(base) {
    this.base = base.replace(/\/$/, "");
    this.key = "quipfeed:token:" + this.base;
    this.token = null;
    try { this.token = window.localStorage.getItem(this.key); } catch (e) { /* storage blocked */ }
  }

  async session(force) {
    if (this.token && !force) return this.token;
    const res = await fetch(this.base + "/v1/session", { method: "POST" });
    const body = await res.json().catch(() => ({}));
    if (!res.ok) throw new ApiError(res.status, (body.error && body.error.message) || "no session");
    this.token = body.token;
    try { window.localStorage.setItem(this.key, this.token); } catch (e) { /* fine: per page */ }
    return this.token;
  }

  async request(method, path, body, extra) {
    for (let attempt = 0; attempt < 2; attempt++) {
      const token = await this.session(attempt > 0);
      const headers = Object.assign({ Authorization: "Bearer " + token }, (extra && extra.headers) || {});
      if (body !== undefined) headers["Content-Type"] = "application/json";
      const res = await fetch(this.base + path, {
        method, headers, body: body === undefined ? undefined : JSON.stringify(body),
        signal: extra && extra.signal,
      });
      if (res.status === 401 && attempt === 0) continue; // expired or foreign token: start over
      return res;
    }
    throw new ApiError(401, "could not start a session");
  }

  async json(method, path, body) {
    const res = await this.request(method, path, body);
    const data = await res.json().catch(() => ({}));
    if (!res.ok) throw new ApiError(res.status, (data.error && data.error.message) || res.statusText);
    return data;
  }

  // Runs a turn: `handlers.on(event, data)` for each event; resolves when done (or stopped).
  // On a network drop mid-stream it reconnects with the last event id, so nothing is lost.
  async turn(method, path, body, handlers) {
    const state = { turnId: null, lastId: null, finished: false };
    const controller = new AbortController();
    handlers.abort = () => controller.abort();
    let res = await this.request(method, path, body, { signal: controller.signal });
    if (!res.ok) {
      const data = await res.json().catch(() => ({}));
      throw new ApiError(res.status, (data.error && data.error.message) || res.statusText);
    }
    let delay = 250;
    for (let attempt = 0; ; attempt++) {
      try {
        await this._read(res, state, handlers);
        if (state.finished) return state;
        throw new Error("stream ended early");
      } catch (err) {
        if (controller.signal.aborted) throw err;
        if (!state.turnId || attempt >= 20) throw err;
        handlers.on("reconnecting", { attempt: attempt + 1 });
        await new Promise((r) => setTimeout(r, delay));
        delay = Math.min(delay * 2, 4000);
        try {
          res = await this.request("GET", "/v1/turns/" + encodeURIComponent(state.turnId) + "/events",
            undefined, { signal: controller.signal, headers: state.lastId ? { "Last-Event-ID": state.lastId } : {} });
        } catch (e) {
          if (controller.signal.aborted) throw e;
          res = null;
        }
        if (res && res.status === 404) throw new ApiError(404, "the answer is no longer available");
        if (res && res.ok) handlers.on("reconnected", {});
        if (!res || !res.ok) { res = { body: null }; }
      }
    }
  }

  async _read(res, state, handlers) {
    if (!res.body) throw new Error("no body");
    const parser = createParser({
      onEvent: (msg) => {
        if (msg.id) state.lastId = msg.id;
        let data = {};
        try { data = msg.data ? JSON.parse(msg.data) : {}; } catch (e) { data = {}; }
        if (msg.event === "turn") state.turnId = data.turn_id;
        if (msg.event === "done" || msg.event === "error" || msg.event === "stopped") state.finished = true;
        handlers.on(msg.event || "message", data);
      },
    });
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      parser.feed(decoder.decode(value, { stream: true }));
      if (state.finished) { reader.cancel().catch(() => {}); break; }
    }
  }
}
