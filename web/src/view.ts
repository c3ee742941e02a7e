// One conversation on screen: the current branch, each message with its actions, and what
// happened to an answer (cut, stopped, empty, at the length limit) with a Retry.
import { el } from "./dom";
import { addCopyButtons, copyText, renderMarkdown } from "./markdown";
import { announce, state, ui } from "./state";
import { type Msg, pathTo, siblings } from "./tree";

/** What the buttons do; set by main.ts (this module only draws). */
export const actions = {
  retry: (_m: Msg): void => {},
  edit: (_m: Msg, _text: string): void => {},
  switchTo: (_m: Msg): void => {},
};

const NOTES: Record<string, string> = {
  cut: "This answer was cut off: the server stopped while writing it.",
  stopped: "Stopped before the end.",
  length: "The answer stopped at the length limit (Max tokens in Settings, or the model's context).",
  streaming: "This answer is still being written.",
};

export function renderConversation(): void {
  ui.messages.replaceChildren();
  const conv = state.conv;
  if (!conv) {
    ui.messages.append(el("div", "empty", "Start a conversation. 你好！"));
    return;
  }
  for (const m of pathTo(conv.messages, conv.current_leaf)) {
    if (m.parent_id) state.shown.set(m.parent_id, m.id);
    ui.messages.append(messageView(m));
  }
  ui.messages.scrollTop = ui.messages.scrollHeight;
}

export function setContent(body: HTMLElement, role: string, text: string): void {
  if (role === "assistant") {
    body.innerHTML = renderMarkdown(text);
    addCopyButtons(body);
  } else {
    body.textContent = text; // what people type is shown as typed, never as HTML
  }
}

function button(cls: string, text: string, label: string, onClick: () => void): HTMLButtonElement {
  const b = el("button", cls, text);
  b.type = "button";
  if (label !== text) b.setAttribute("aria-label", label);
  b.addEventListener("click", onClick);
  return b;
}

/** The note under an answer that did not end normally ("" when it did). */
export function statusNote(m: Msg): string {
  if (m.role !== "assistant") return "";
  const status = m.status ?? "done";
  if (!m.content && status !== "streaming" && !m.tool_calls) return "The model gave an empty answer.";
  return NOTES[status] ?? "";
}

function branchButtons(bar: HTMLElement, m: Msg): void {
  const sibs = state.conv ? siblings(state.conv.messages, m) : [];
  if (sibs.length < 2) return;
  const i = sibs.findIndex((s) => s.id === m.id);
  const prev = button("branch-prev", "‹", "Previous version", () => actions.switchTo(sibs[i - 1]));
  const next = button("branch-next", "›", "Next version", () => actions.switchTo(sibs[i + 1]));
  prev.disabled = i === 0;
  next.disabled = i === sibs.length - 1;
  bar.append(prev, el("span", "branch-label", `${i + 1}/${sibs.length}`), next);
}

export function messageView(m: Msg): HTMLElement {
  const box = el("div", `msg ${m.role}`);
  box.dataset.id = m.id;
  box.dataset.role = m.role;
  box.dataset.status = m.status ?? "done";
  const body = el("div", "body");
  setContent(body, m.role, m.content);
  box.append(body);
  const note = statusNote(m);
  if (note) box.append(el("p", "status-note", note));
  const context = state.notes.get(m.id);
  if (context) box.append(el("p", "context-note", context));
  const bar = el("div", "actions");
  branchButtons(bar, m);
  const copy = button("copy", "Copy", "Copy", () => {
    void copyText(m.content).then(() => {
      copy.textContent = "Copied";
      announce("Copied");
      setTimeout(() => (copy.textContent = "Copy"), 1500);
    });
  });
  bar.append(copy);
  if (m.role === "user") bar.append(button("edit", "Edit", "Edit", () => startEdit(box, m)));
  else if (m.role === "assistant" && note && m.status !== "length" && m.status !== "streaming") {
    bar.append(button("retry", "Retry", "Retry", () => actions.retry(m)));
  } else if (m.role === "assistant") bar.append(button("regen", "Regenerate", "Regenerate", () => actions.retry(m)));
  box.append(bar);
  return box;
}

function startEdit(box: HTMLElement, m: Msg): void {
  const area = el("textarea", "edit-input");
  area.value = m.content;
  area.setAttribute("aria-label", "Edit your message");
  const bar = el("div", "actions");
  bar.append(
    button("edit-save", "Save & submit", "Save & submit", () => actions.edit(m, area.value)),
    button("edit-cancel", "Cancel", "Cancel", () => renderConversation()),
  );
  box.replaceChildren(area, bar);
  area.focus();
}

/** An answer box that grows as the text streams in; returns its painter. */
export function streamingBox(): (text: string) => void {
  const box = el("div", "msg assistant streaming");
  box.dataset.role = "assistant";
  const body = el("div", "body");
  box.append(body);
  ui.messages.append(box);
  return (text: string) => {
    setContent(body, "assistant", text);
    ui.messages.scrollTop = ui.messages.scrollHeight;
  };
}
