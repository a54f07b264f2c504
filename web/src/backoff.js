// How long the page waits before its own reconnect attempts (after the SDK's resume gave up).

export const MAX_RECONNECT_ATTEMPTS = 5;
const BASE_MS = 1000;
const CAP_MS = 10_000;

/**
 * The wait before reconnect attempt `attempt` (1-based): exponential (1 s, 2 s, 4 s, ... capped at
 * 10 s) with "equal jitter" (a random half to all of it), so many pages cut off at once by the same
 * outage do not all come back in the same instant, and no wait is zero.
 */
export function reconnectDelayMs(attempt, random = Math.random) {
  const ceiling = Math.min(CAP_MS, BASE_MS * 2 ** Math.max(0, attempt - 1));
  return Math.round(ceiling / 2 + random() * (ceiling / 2));
}
