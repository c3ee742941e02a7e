// Checks of what people type, made before anything is sent: the server's own limits, said
// in words with the allowed range. Pure, so it is unit-tested.

/** The server's limits (serve/protocol.py and the conversation store). */
export const LIMITS = { title: 500, temperature: [0, 2], top_p: [0, 1] } as const;

export interface Sampling {
  temperature?: number;
  top_p?: number;
  max_tokens?: number;
}

/** Field id -> what is wrong with it; empty when every value is in range. */
export function samplingProblems(s: Sampling): Record<string, string> {
  const out: Record<string, string> = {};
  const [tLo, tHi] = LIMITS.temperature;
  if (s.temperature !== undefined && !(s.temperature >= tLo && s.temperature <= tHi)) {
    out.temperature = `Temperature must be between ${tLo} and ${tHi} (it is ${s.temperature}).`;
  }
  if (s.top_p !== undefined && !(s.top_p > LIMITS.top_p[0] && s.top_p <= LIMITS.top_p[1])) {
    out.top_p = `Top p must be more than 0 and at most 1 (it is ${s.top_p}).`;
  }
  if (s.max_tokens !== undefined && !(Number.isInteger(s.max_tokens) && s.max_tokens >= 1)) {
    out.max_tokens = `Max tokens must be a whole number, 1 or more (it is ${s.max_tokens}).`;
  }
  return out;
}

/** Why a conversation title cannot be saved, or "" when it can. */
export function titleProblem(title: string): string {
  const n = [...title].length;
  if (!title.trim()) return "A title cannot be empty.";
  if (n > LIMITS.title) return `A title can have at most ${LIMITS.title} characters (this one has ${n}).`;
  return "";
}
