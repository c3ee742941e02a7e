// Sending and answering. The server answers a stored user message and stores the answer as
// it streams, so the page never has to save it: a closed page or a dead server loses nothing
// the person read. The box keeps what was typed until the server has stored it.
import { answer, api } from "./api";
import { samplingProblems } from "./checks";
import { clearError, showError } from "./errors";
import { readSettings, samplingFields, showProblems } from "./settings";
import { refreshList } from "./sidebar";
import { isBusy, setBusy, state, ui } from "./state";
import { contextNote } from "./stream";
import { deepestLeaf, type Msg } from "./tree";
import { renderConversation, streamingBox } from "./view";

const DRAFT = "chatsmith.draft";

export function saveDraft(): void {
  localStorage.setItem(DRAFT, ui.input.value);
}

export function restoreDraft(): void {
  ui.input.value = localStorage.getItem(DRAFT) ?? "";
}

/** False (and says why, next to the field) when a setting is outside the server's range. */
function settingsOk(): boolean {
  const problems = samplingProblems(samplingFields());
  showProblems(problems);
  const first = Object.values(problems)[0];
  if (!first) return true;
  ui.settings.hidden = false;
  showError(first);
  return false;
}

export async function send(): Promise<void> {
  const text = ui.input.value;
  if (!text.trim() || state.controller || isBusy() || !settingsOk()) return;
  clearError();
  setBusy(true); // at once, so a second Enter cannot send twice
  try {
    if (!state.conv) {
      const c = await api.create(text.replace(/\s+/g, " ").slice(0, 40), readSettings());
      state.conv = { ...c, messages: [] };
      localStorage.setItem("chatsmith.open", c.id);
    }
    const m = await addUserMessage(text, state.conv.current_leaf);
    ui.input.value = ""; // only now: the server has it
    saveDraft();
    ui.input.dispatchEvent(new Event("input"));
    void refreshList().catch(() => undefined);
    await generate(m);
  } catch (e) {
    setBusy(false);
    showError(e, { retry: () => void send() });
  }
}

async function addUserMessage(text: string, parent: string | null): Promise<Msg> {
  const c = state.conv!;
  const m = await api.addMessage(c.id, { role: "user", content: text, parent_id: parent });
  c.messages.push(m);
  c.current_leaf = m.id;
  return m;
}

export async function submitEdit(m: Msg, text: string): Promise<void> {
  if (!text.trim() || state.controller || isBusy() || !settingsOk()) return;
  setBusy(true);
  try {
    await generate(await addUserMessage(text, m.parent_id)); // a sibling: the old branch stays
  } catch (e) {
    setBusy(false);
    showError(e, { retry: () => void submitEdit(m, text) });
  }
}

/** Answer the question of `m` again: a new sibling, as regenerate. */
export async function retry(m: Msg): Promise<void> {
  const parent = state.conv?.messages.find((x) => x.id === m.parent_id);
  if (!parent || state.controller || isBusy() || !settingsOk()) return;
  clearError();
  await generate(parent);
}

/** Stream the server's answer to the user message `parent`, then show what it stored. */
async function generate(parent: Msg): Promise<void> {
  const c = state.conv!;
  c.current_leaf = parent.id;
  renderConversation();
  const paint = streamingBox();
  const run = new AbortController();
  state.controller = run;
  setBusy(true);
  let text = "";
  let id = "";
  let frame = 0;
  let failed: unknown = null;
  try {
    const body = { parent_id: parent.id, model: state.model || undefined, ...samplingFields() };
    for await (const ev of answer(c.id, body, run.signal)) {
      if (ev.messageId) id = ev.messageId;
      if (ev.info && contextNote(ev.info)) state.notes.set(id, contextNote(ev.info));
      if (ev.content) text += ev.content;
      if (ev.content && !frame) frame = requestAnimationFrame(() => ((frame = 0), paint(text)));
    }
  } catch (e) {
    if (!run.signal.aborted) failed = e;
  }
  cancelAnimationFrame(frame);
  if (state.controller !== run) return; // left behind by "+ New chat" or another chat: the server kept it
  state.controller = null;
  paint(text);
  await settle(c.id, id, parent, text, failed);
  setBusy(false);
}

/** Show the answer as the server stored it; if the server is gone, keep what was read on screen. */
async function settle(convId: string, id: string, parent: Msg, text: string, failed: unknown): Promise<void> {
  const c = state.conv!;
  try {
    let fresh = await api.get(convId);
    // After Stop, the server writes the row's end as the stream closes: wait for it briefly.
    for (let i = 0; i < 20 && fresh.messages.find((m) => m.id === id)?.status === "streaming"; i++) {
      await new Promise((r) => setTimeout(r, 100));
      fresh = await api.get(convId);
    }
    if (state.conv !== c) return;
    state.conv = fresh;
  } catch (e) {
    failed ??= e;
    if (id && !c.messages.some((m) => m.id === id)) {
      c.messages.push({ id, parent_id: parent.id, role: "assistant", content: text, created_at: Date.now() / 1000, status: "cut" });
    }
    if (id) c.current_leaf = id; // the server has this row: a next message goes under it
  }
  renderConversation();
  if (failed) showError(failed, { retry: () => void reopen(convId) });
}

async function reopen(convId: string): Promise<void> {
  try {
    state.conv = await api.get(convId);
    renderConversation();
  } catch (e) {
    showError(e, { retry: () => void reopen(convId) });
  }
}

export async function switchTo(m: Msg): Promise<void> {
  const c = state.conv;
  if (!c || state.controller) return;
  c.current_leaf = deepestLeaf(c.messages, m.id, state.shown);
  renderConversation();
  setBusy(true);
  try {
    await api.patch(c.id, { current_leaf: c.current_leaf });
  } catch (e) {
    showError(e);
  } finally {
    setBusy(false);
  }
}

/** Leave the answer streaming now (New chat, another chat): the server stores it as stopped. */
export function leaveAnswer(): void {
  state.controller?.abort();
  state.controller = null;
  setBusy(false);
}
