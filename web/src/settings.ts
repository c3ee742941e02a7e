// The system prompt and sampling settings (stored with each conversation; the last ones used
// are the defaults for a new one), and the light/dark theme.
const input = (id: string) => document.getElementById(id) as HTMLInputElement | HTMLTextAreaElement;
const DEFAULTS = "chatsmith.settings";
const THEME = "chatsmith.theme";

function num(id: string): number | undefined {
  const v = input(id).value;
  return v === "" || Number.isNaN(Number(v)) ? undefined : Number(v);
}

export function readSettings(): Record<string, unknown> {
  return {
    system: input("system").value,
    temperature: num("temperature"),
    top_p: num("top_p"),
    max_tokens: num("max_tokens"),
  };
}

export function applySettings(s: Record<string, unknown>): void {
  const saved = { ...JSON.parse(localStorage.getItem(DEFAULTS) ?? "{}"), ...s };
  input("system").value = (saved.system as string) ?? "";
  input("temperature").value = saved.temperature === undefined ? "0.7" : String(saved.temperature);
  input("top_p").value = saved.top_p === undefined ? "1" : String(saved.top_p);
  input("max_tokens").value = saved.max_tokens === undefined ? "" : String(saved.max_tokens);
}

export function saveDefaults(): void {
  localStorage.setItem(DEFAULTS, JSON.stringify(readSettings()));
}

/** The sampling fields of a chat request (unset ones left out, so the server's defaults apply). */
export function samplingFields(): { temperature?: number; top_p?: number; max_tokens?: number } {
  const s = readSettings();
  const out: Record<string, number> = {};
  for (const k of ["temperature", "top_p", "max_tokens"]) if (typeof s[k] === "number") out[k] = s[k] as number;
  return out;
}

export function initTheme(): void {
  const theme = localStorage.getItem(THEME);
  const prefersDark = window.matchMedia?.("(prefers-color-scheme: dark)").matches;
  document.documentElement.classList.toggle("dark", theme ? theme === "dark" : prefersDark);
}

export function toggleTheme(): void {
  const dark = !document.documentElement.classList.contains("dark");
  document.documentElement.classList.toggle("dark", dark);
  localStorage.setItem(THEME, dark ? "dark" : "light");
}

/** Mark each field the server would refuse (aria-invalid, with its message next to it). */
export function showProblems(problems: Record<string, string>): void {
  for (const id of ["temperature", "top_p", "max_tokens"]) {
    const field = input(id);
    const note = document.getElementById(`${id}-note`)!;
    field.setAttribute("aria-invalid", String(Boolean(problems[id])));
    note.textContent = problems[id] ?? "";
  }
}

/** Save `data` as a JSON file through the browser's download. */
export function downloadJson(name: string, data: unknown): void {
  const blob = new Blob([JSON.stringify(data, null, 2)], { type: "application/json" });
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = `${name.replace(/[^\p{L}\p{N}]+/gu, "_") || "conversation"}.json`;
  a.click();
  URL.revokeObjectURL(a.href);
}
