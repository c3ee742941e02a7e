// The conversation list: open, rename (Enter saves once, Escape cancels, the server's title
// limit checked first), delete (after a confirmation); and, on a phone, the drawer it lives in.
import { api } from "./api";
import { titleProblem } from "./checks";
import { $, el } from "./dom";
import { showError } from "./errors";
import { announce, state, ui } from "./state";
import type { Conv } from "./tree";

/** What opening or losing a chat does; set by main.ts. */
export const listHooks = {
  open: (_id: string): void => {},
  closed: (): void => {},
};

export async function refreshList(): Promise<void> {
  const { data } = await api.list(ui.search.value.trim());
  ui.list.replaceChildren(...data.map(row));
}

function row(c: Conv): HTMLLIElement {
  const li = el("li", "conv" + (state.conv?.id === c.id ? " active" : ""));
  li.dataset.id = c.id;
  const name = c.title || "New chat";
  const title = el("button", "conv-title", name);
  title.type = "button";
  if (state.conv?.id === c.id) title.setAttribute("aria-current", "page");
  title.addEventListener("click", () => listHooks.open(c.id));
  const rename = el("button", "rename", "✎");
  rename.setAttribute("aria-label", `Rename “${name}”`);
  rename.addEventListener("click", () => startRename(li, c));
  const del = el("button", "delete", "×");
  del.setAttribute("aria-label", `Delete “${name}”`);
  del.addEventListener("click", () => void remove(c, name));
  li.append(title, rename, del);
  return li;
}

function startRename(li: HTMLLIElement, c: Conv): void {
  const input = el("input", "rename-input");
  input.value = c.title;
  input.setAttribute("aria-label", "New title");
  const note = el("p", "rename-error");
  note.setAttribute("role", "alert");
  note.hidden = true;
  li.replaceChildren(input, note);
  input.focus();
  input.select();
  let finished = false; // Enter, Escape and the blur that follows them end it once
  const finish = async (save: boolean) => {
    if (finished) return;
    const title = input.value.trim();
    const problem = save && title !== c.title ? titleProblem(title) : "";
    if (problem) {
      note.textContent = problem;
      note.hidden = false;
      input.setAttribute("aria-invalid", "true");
      return; // the row stays open for a fix (or Escape)
    }
    finished = true;
    if (save && title && title !== c.title) {
      try {
        await api.patch(c.id, { title });
        if (state.conv?.id === c.id) state.conv.title = title;
      } catch (e) {
        showError(e);
      }
    }
    await refreshList().catch(showError);
    ui.list.querySelector<HTMLElement>(`.conv[data-id="${c.id}"] .conv-title`)?.focus(); // where the keyboard was
  };
  input.addEventListener("keydown", (e) => {
    if (e.key === "Enter") void finish(true);
    if (e.key === "Escape") void finish(false);
  });
  input.addEventListener("blur", () => void finish(!titleProblem(input.value.trim())));
}

async function remove(c: Conv, name: string): Promise<void> {
  if (!confirm(`Delete “${name}”? This cannot be undone.`)) return;
  try {
    await api.remove(c.id);
    if (state.conv?.id === c.id) listHooks.closed();
    announce(`Deleted “${name}”`);
    await refreshList();
    ui.input.focus(); // the focused row is gone
  } catch (e) {
    showError(e);
  }
}

// -- the drawer on a phone ------------------------------------------------------------------
export function setSidebar(open: boolean): void {
  const sidebar = $("sidebar");
  const wasOpen = document.body.classList.contains("sidebar-open");
  document.body.classList.toggle("sidebar-open", open);
  $("menu").setAttribute("aria-expanded", String(open));
  if (open) ui.search.focus();
  // A closed drawer hides what had focus: give it back to the button that opened it.
  else if (wasOpen && sidebar.contains(document.activeElement)) $("menu").focus();
}

export function wireSidebar(): void {
  $("menu").addEventListener("click", () => setSidebar(!document.body.classList.contains("sidebar-open")));
  $("scrim").addEventListener("click", () => setSidebar(false));
  $("close-sidebar").addEventListener("click", () => setSidebar(false));
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape" && document.body.classList.contains("sidebar-open")) setSidebar(false);
  });
}
