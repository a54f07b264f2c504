// Asking our own token service for a call: same origin, never cached, errors sorted for people.

export const TOKEN_PATH = "/api/voice-token";

/** Why no token: `kind` is refused (401/403), rate_limited (429), network, or server. */
export class TokenError extends Error {
  constructor(kind, message, { status = null, retryAfterS = null } = {}) {
    super(message);
    this.name = "TokenError";
    this.kind = kind;
    this.status = status;
    this.retryAfterS = retryAfterS;
  }

  /** Whether trying again later may work (a refusal will not change by itself). */
  get retryable() {
    return this.kind !== "refused";
  }
}

/**
 * POST the token endpoint and return {rtcUrl, token, expiresIn, room, identity, clientPolicy}.
 * `clientPolicy` is the raw `client_policy` object, or null when the server sent none.
 */
export async function fetchVoiceToken({ signal } = {}) {
  let response;
  try {
    response = await fetch(TOKEN_PATH, {
      method: "POST",
      cache: "no-store",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: "{}",
      signal,
    });
  } catch (error) {
    if (error?.name === "AbortError") throw error;
    throw new TokenError("network", "Cannot reach the voice service. Check your connection.");
  }
  const body = await response.json().catch(() => null);
  if (!response.ok) throw errorFor(response, body);
  const fields = body && typeof body === "object" ? body : {};
  if (typeof fields.rtc_url !== "string" || typeof fields.token !== "string") {
    throw new TokenError("server", "The voice service sent an unusable answer.", { status: response.status });
  }
  return {
    rtcUrl: fields.rtc_url,
    token: fields.token,
    expiresIn: Number(fields.expires_in) || null,
    room: String(fields.room ?? ""),
    identity: String(fields.identity ?? ""),
    clientPolicy: fields.client_policy ?? null,
  };
}

function errorFor(response, body) {
  const status = response.status;
  const detail = typeof body?.detail === "string" ? body.detail.slice(0, 200) : "";
  if (status === 401 || status === 403) {
    const why = detail ? ` (${detail})` : "";
    return new TokenError("refused", `The voice service refused to start a call${why}. Sign in and try again.`, { status });
  }
  if (status === 429) {
    const retryAfterS = parseRetryAfter(response.headers.get("Retry-After"));
    return new TokenError("rate_limited", "Too many calls were started from here.", { status, retryAfterS });
  }
  return new TokenError("server", `The voice service could not start a call (HTTP ${status}).`, { status });
}

function parseRetryAfter(value) {
  if (value === null) return null;
  const seconds = Number.parseInt(value, 10);
  if (Number.isFinite(seconds) && seconds >= 0) return Math.min(seconds, 3600);
  const date = Date.parse(value);
  return Number.isNaN(date) ? null : Math.max(0, Math.min(3600, Math.ceil((date - Date.now()) / 1000)));
}
