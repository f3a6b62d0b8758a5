// The backend's public API: actions over HTTP (`POST /v1/ACTION`) and the live
// WebSocket of an access-long instance.

/** An action the backend refused: `code` and `reason` as the API states them. */
export class ApiError extends Error {
  constructor(status, error) {
    super(error?.message ?? `HTTP ${status}`);
    this.status = status;
    this.code = error?.code ?? "unknown";
    this.reason = error?.reason ?? "";
  }
}

/** A readable sentence for an API error. */
export function explain(e) {
  if (!(e instanceof ApiError)) return `Could not reach the server (${e.message ?? e}).`;
  const known = {
    wrong_password: "Wrong password.",
    unknown_user: "No such user.",
    name_taken: "That name is taken.",
    not_friend: "You are not friends (yet).",
    not_member: "You are not in this group.",
    rate_limited: "Too many requests; slow down a little.",
    login_throttled: "Too many wrong passwords for this account; wait a moment.",
    proof_required: "Sign-in is busy; try again in a moment.",
    token_expired: "Your session expired; log in again.",
    token_invalid: "Your session ended; log in again.",
    edge_shed: "The service is busy; try again in a moment.",
    held_back: "The service is busy; try again in a moment.",
    not_visible: "You cannot see this post.",
    not_author: "Only the author can do that.",
  };
  const prefix = known[e.reason];
  return prefix ? `${prefix} (${e.message})` : e.message;
}

/** How long a hint holds, and the first backoff after a refusal (doubled to the max). */
const HINT_TTL_MS = 500;
const HINT_TTL_MAX_MS = 8000;
/** The pause after a refusal whose answer's hint still admits the refused priority. */
const PEAK_BACKOFF_MS = 50;

/**
 * What the gateway's answers said about admission; the same rules as the Rust client's
 * `wx_client::AdmitHint`. A fresh hint holds back what is above its ceiling. A refusal
 * (`edge_shed`) of priority p holds back p and less important priorities for a backoff
 * that doubles with each further refusal, whatever hints come between; a request of p
 * that runs ends the backoff of p and the more important ones only. An answer without a
 * hint (nothing is shed) lifts everything. A hint no answer has renewed for HINT_TTL_MS
 * lets one request above it through (the probe) and holds the rest until its answer. A
 * refusal whose own hint still admits its priority (a peak) pauses it PEAK_BACKOFF_MS.
 */
class AdmitHint {
  constructor() {
    this.hint = null; // { ceiling, at }
    this.backoffs = []; // { priority, until, held }, few: one per priority refused
    this.probe = null; // when the probe of a stale hint was let through, until its answer
  }

  holdsBack(priority, now) {
    if (this.backoffs.some((b) => b.priority <= priority && now < b.until)) return true;
    if (!this.hint || priority <= this.hint.ceiling) return false;
    const fresh = (since) => since !== null && now - since < HINT_TTL_MS;
    if (fresh(this.hint.at) || fresh(this.probe)) return true;
    this.probe = now;
    return false;
  }

  observe(priority, ceiling, refused, now) {
    this.probe = null;
    if (!Number.isFinite(ceiling)) {
      this.hint = null;
      this.backoffs = [];
      return;
    }
    this.hint = { ceiling, at: now };
    if (refused && ceiling !== 0 && ceiling >= priority) {
      // Refused at a peak the hint does not hold against this priority: a short pause.
      this.backOff(priority, now + PEAK_BACKOFF_MS, 0);
    } else if (refused) {
      const covering = this.backoffs
        .filter((b) => b.priority <= priority && b.held > 0)
        .map((b) => b.held * 2);
      const held = Math.min(Math.max(HINT_TTL_MS, ...covering), HINT_TTL_MAX_MS);
      this.backOff(priority, now + held, held);
    } else {
      this.backoffs = this.backoffs.filter((b) => b.priority > priority);
    }
  }

  /** Holds `priority` back until `until`, unless a backoff of it already holds it longer. */
  backOff(priority, until, held) {
    const existing = this.backoffs.find((b) => b.priority === priority);
    if (!existing) this.backoffs.push({ priority, until, held });
    else if (existing.until < until) Object.assign(existing, { until, held });
  }
}

/**
 * Calls actions with the session token. While the gateway sheds load its answers carry
 * `x-wx-admit: N`, the least important business priority it still admits from us; an
 * action it would refuse is then refused here, without being sent (`held_back`), by the
 * rules of `AdmitHint`. Priorities come from the live connection's auth answer; an
 * action whose priority is not known yet is always sent.
 */
export class Api {
  constructor() {
    this.token = null;
    this.priorities = {};
    this.admit = new AdmitHint();
  }

  /** Runs `action` with `body`; resolves to the answer or throws an ApiError. */
  async call(action, body = {}) {
    const priority = this.priorities[action];
    if (priority !== undefined && this.admit.holdsBack(priority, Date.now())) {
      throw new ApiError(503, {
        code: "overloaded",
        reason: "held_back",
        message: "not sent: the service is shedding this kind of request",
      });
    }
    const headers = { "Content-Type": "application/json" };
    if (this.token) headers.Authorization = `Bearer ${this.token}`;
    const response = await fetch(`/v1/${action}`, {
      method: "POST",
      headers,
      body: JSON.stringify(body),
      credentials: "same-origin",
    });
    let answer = null;
    try {
      answer = await response.json();
    } catch {
      throw new ApiError(response.status, { message: `HTTP ${response.status}` });
    }
    const header = response.headers.get("x-wx-admit");
    const ceiling = header === null ? NaN : Number(header);
    const refused = answer?.error?.reason === "edge_shed";
    this.admit.observe(priority ?? Infinity, ceiling, refused, Date.now());
    if (!answer.ok) throw new ApiError(response.status, answer.error);
    return answer;
  }
}

/** The first reconnection waits a random pause below this; each failure doubles it. */
const FIRST_RECONNECT_MS = 1000;
/** The longest bound of a reconnection's pause. */
const MAX_RECONNECT_MS = 30000;
/** Auth answers that say "try again later", not "this session is over". */
const RETRYABLE = new Set(["overloaded", "unavailable", "resource_exhausted", "deadline_exceeded"]);

/**
 * The live connection: authenticates with the token, hands every push to `onPush`,
 * reports its state to `onState` ("connecting", "live", "offline") and reconnects after
 * a random pause below a growing bound (1 s, doubled per failure up to 30 s) until
 * `close()`.
 */
export class Live {
  constructor(api, onPush, onState) {
    this.api = api;
    this.onPush = onPush;
    this.onState = onState;
    this.socket = null;
    this.closed = false;
    this.pause = FIRST_RECONNECT_MS;
    this.timer = null;
  }

  async open() {
    if (this.closed) return;
    this.onState("connecting");
    let url;
    try {
      url = (await this.api.call("endpoint")).websocket_url;
    } catch (e) {
      if (e instanceof ApiError && e.status === 401) {
        this.onPush("session_ended", { reason: e.reason });
        return;
      }
      this.retry();
      return;
    }
    const socket = new WebSocket(url);
    this.socket = socket;
    socket.addEventListener("open", () => {
      socket.send(JSON.stringify({ op: "auth", token: this.api.token }));
    });
    socket.addEventListener("message", (event) => {
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return;
      }
      if (frame.op === "auth") {
        if (frame.ok) {
          this.pause = FIRST_RECONNECT_MS;
          this.api.priorities = frame.priorities ?? {};
          this.onState("live");
        } else if (RETRYABLE.has(frame.error?.code)) {
          // The backend is busy or restarting, the session is fine: the server closes
          // the socket and the close handler tries again after a pause.
          this.onState("offline");
        } else {
          this.onPush("session_ended", { reason: frame.error?.reason ?? "auth" });
        }
      } else if (frame.push) {
        this.onPush(frame.push, frame.body ?? {});
      }
    });
    socket.addEventListener("close", () => {
      if (this.socket === socket) {
        this.socket = null;
        this.retry();
      }
    });
  }

  retry() {
    this.onState("offline");
    if (this.closed) return;
    clearTimeout(this.timer);
    // Full jitter: clients that lost a gateway together come back spread over the
    // window instead of all at once.
    this.timer = setTimeout(() => this.open(), Math.random() * this.pause);
    this.pause = Math.min(this.pause * 2, MAX_RECONNECT_MS);
  }

  close() {
    this.closed = true;
    clearTimeout(this.timer);
    const socket = this.socket;
    this.socket = null;
    socket?.close();
    this.onState("offline");
  }
}
