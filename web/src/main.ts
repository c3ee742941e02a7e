// The chat page: a conversation list kept on the server, one conversation's current branch,
// streaming answers, stop / regenerate / edit-to-branch, settings, dark mode, export/import.
import "highlight.js/styles/github-dark.css";
import "katex/dist/katex.min.css";
import "./style.css";
import { api, ApiError, apiKey, setApiKey, streamChat } from "./api";
import { addCopyButtons, copyText, renderMarkdown } from "./markdown";
import {
  applySettings,
  downloadJson,
  initTheme,
  readSettings as settings,
  samplingFields,
  saveDefaults,
  toggleTheme,
} from "./settings";
import { type Conv, deepestLeaf, type Msg, pathTo, siblings } from "./tree";
import { $, el } from "./dom";

const ui = {
  list: $<HTMLUListElement>("conversations"),
  search: $<HTMLInputElement>("search"),
  messages: $<HTMLDivElement>("messages"),
  input: $<HTMLTextAreaElement>("input"),
  send: $<HTMLButtonElement>("send"),
  stop: $<HTMLButtonElement>("stop"),
  error: $<HTMLDivElement>("error"),
  settings: $<HTMLElement>("settings"),
  key: $<HTMLInputElement>("api-key"),
  model: $<HTMLSpanElement>("model-name"),
};

let model = "";
let conv: Conv | null = null;
let controller: AbortController | null = null;
const shown = new Map<string, string>(); // parent id -> the child on screen, so switching back returns there

// -- small helpers ------------------------------------------------------------------------
function showError(e: unknown): void {
  const msg = e instanceof Error ? e.message : String(e);
  ui.error.textContent = msg;
  ui.error.hidden = false;
  if (e instanceof ApiError && e.status === 401) ui.settings.hidden = false;
}

function clearError(): void {
  ui.error.hidden = true;
}


// -- the conversation list ----------------------------------------------------------------
async function refreshList(): Promise<void> {
  const { data } = await api.list(ui.search.value.trim());
  ui.list.replaceChildren(
    ...data.map((c) => {
      const li = el("li", "conv" + (conv?.id === c.id ? " active" : ""));
      li.dataset.id = c.id;
      const title = el("span", "conv-title", c.title || "New chat");
      title.addEventListener("click", () => void open(c.id));
      const rename = el("button", "rename", "✎");
      rename.title = "Rename";
      rename.addEventListener("click", () => startRename(li, c));
      const del = el("button", "delete", "×");
      del.title = "Delete";
      del.addEventListener("click", () => void remove(c.id));
      li.append(title, rename, del);
      return li;
    }),
  );
}

function startRename(li: HTMLLIElement, c: Conv): void {
  const input = el("input", "rename-input");
  input.value = c.title;
  li.replaceChildren(input);
  input.focus();
  input.select();
  const done = async (save: boolean) => {
    if (save && input.value.trim()) {
      await api.patch(c.id, { title: input.value.trim() });
      if (conv?.id === c.id) conv.title = input.value.trim();
    }
    await refreshList();
  };
  input.addEventListener("keydown", (e) => {
    if (e.key === "Enter") void done(true);
    if (e.key === "Escape") void done(false);
  });
  input.addEventListener("blur", () => void done(true), { once: true });
}

async function remove(id: string): Promise<void> {
  await api.remove(id);
  if (conv?.id === id) {
    conv = null;
    renderConversation();
  }
  await refreshList();
}

async function open(id: string): Promise<void> {
  if (controller) controller.abort();
  conv = await api.get(id);
  applySettings(conv.settings ?? {});
  localStorage.setItem("chatsmith.open", id);
  document.body.classList.remove("sidebar-open");
  renderConversation();
  await refreshList();
}

// -- one conversation ---------------------------------------------------------------------
function renderConversation(): void {
  ui.messages.replaceChildren();
  if (!conv) {
    ui.messages.append(el("div", "empty", "Start a conversation. 你好！"));
    return;
  }
  for (const m of pathTo(conv.messages, conv.current_leaf)) {
    if (m.parent_id) shown.set(m.parent_id, m.id);
    ui.messages.append(messageView(m));
  }
  ui.messages.scrollTop = ui.messages.scrollHeight;
}

function setContent(body: HTMLElement, role: string, text: string): void {
  if (role === "assistant") {
    body.innerHTML = renderMarkdown(text);
    addCopyButtons(body);
  } else {
    body.textContent = text; // what people type is shown as typed, never as HTML
  }
}

function messageView(m: Msg): HTMLElement {
  const box = el("div", `msg ${m.role}`);
  box.dataset.id = m.id;
  box.dataset.role = m.role;
  const body = el("div", "body");
  setContent(body, m.role, m.content);
  const bar = el("div", "actions");
  if (conv) {
    const sibs = siblings(conv.messages, m);
    if (sibs.length > 1) {
      const i = sibs.findIndex((s) => s.id === m.id);
      const prev = el("button", "branch-prev", "‹");
      const next = el("button", "branch-next", "›");
      prev.disabled = i === 0;
      next.disabled = i === sibs.length - 1;
      prev.addEventListener("click", () => void switchTo(sibs[i - 1]));
      next.addEventListener("click", () => void switchTo(sibs[i + 1]));
      bar.append(prev, el("span", "branch-label", `${i + 1}/${sibs.length}`), next);
    }
  }
  const copy = el("button", "copy", "Copy");
  copy.addEventListener("click", () => void copyText(m.content));
  bar.append(copy);
  if (m.role === "user") {
    const edit = el("button", "edit", "Edit");
    edit.addEventListener("click", () => startEdit(box, m));
    bar.append(edit);
  } else if (m.role === "assistant") {
    const regen = el("button", "regen", "Regenerate");
    regen.addEventListener("click", () => void regenerate(m));
    bar.append(regen);
  }
  box.append(body, bar);
  return box;
}

function startEdit(box: HTMLElement, m: Msg): void {
  const area = el("textarea", "edit-input");
  area.value = m.content;
  const save = el("button", "edit-save", "Save & submit");
  const cancel = el("button", "edit-cancel", "Cancel");
  box.replaceChildren(area, el("div", "actions"));
  box.lastElementChild!.append(save, cancel);
  area.focus();
  cancel.addEventListener("click", () => renderConversation());
  save.addEventListener("click", () => void submitEdit(m, area.value));
}

async function switchTo(m: Msg): Promise<void> {
  if (!conv || controller) return;
  conv.current_leaf = deepestLeaf(conv.messages, m.id, shown);
  renderConversation();
  setBusy(true);
  try {
    await api.patch(conv.id, { current_leaf: conv.current_leaf });
  } catch (e) {
    showError(e);
  } finally {
    setBusy(false);
  }
}

// -- sending and generating ---------------------------------------------------------------
async function ensureConversation(firstText: string): Promise<Conv> {
  if (conv) return conv;
  const title = firstText.replace(/\s+/g, " ").slice(0, 40);
  const c = await api.create(title, settings());
  conv = { ...c, messages: [] };
  localStorage.setItem("chatsmith.open", c.id);
  return conv;
}

async function addMessage(role: string, content: string, parent: string | null): Promise<Msg> {
  const c = conv!;
  const m = await api.addMessage(c.id, { role, content, parent_id: parent });
  c.messages.push(m);
  c.current_leaf = m.id;
  return m;
}

async function send(text: string): Promise<void> {
  if (!text.trim() || controller || document.body.classList.contains("busy")) return;
  clearError();
  setBusy(true); // at once, so a second Enter cannot send twice
  try {
    const c = await ensureConversation(text);
    const leaf = c.current_leaf;
    ui.input.value = "";
    autosize();
    const m = await addMessage("user", text, leaf);
    renderConversation();
    await refreshList();
    await generate(m);
  } catch (e) {
    showError(e);
    setBusy(false);
  }
}

async function submitEdit(m: Msg, text: string): Promise<void> {
  if (!text.trim() || controller || document.body.classList.contains("busy")) return;
  setBusy(true);
  try {
    const edited = await addMessage("user", text, m.parent_id); // a sibling: the old branch stays
    renderConversation();
    await generate(edited);
  } catch (e) {
    showError(e);
    setBusy(false);
  }
}

async function regenerate(m: Msg): Promise<void> {
  if (!conv || controller) return;
  const parent = conv.messages.find((x) => x.id === m.parent_id);
  if (parent) await generate(parent);
}

async function generate(parent: Msg): Promise<void> {
  const c = conv!;
  const s = settings();
  const history = pathTo(c.messages, parent.id).map((m) => ({ role: m.role, content: m.content }));
  if (s.system) history.unshift({ role: "system", content: String(s.system) });
  // Show the path up to the parent, plus the answer as it streams in.
  c.current_leaf = parent.id;
  renderConversation();
  const box = el("div", "msg assistant streaming");
  box.dataset.role = "assistant";
  const body = el("div", "body");
  box.append(body);
  ui.messages.append(box);
  controller = new AbortController();
  setBusy(true);
  let text = "";
  let pending = false;
  const paint = () => {
    pending = false;
    setContent(body, "assistant", text);
    ui.messages.scrollTop = ui.messages.scrollHeight;
  };
  try {
    const req = { model, messages: history, ...samplingFields() };
    for await (const piece of streamChat(req, controller.signal)) {
      text += piece;
      if (!pending) {
        pending = true;
        requestAnimationFrame(paint);
      }
    }
  } catch (e) {
    if (!(e instanceof DOMException && e.name === "AbortError")) showError(e);
  } finally {
    controller = null;
    ui.stop.hidden = true;
  }
  paint();
  if (text) {
    try {
      await addMessage("assistant", text, parent.id); // kept even when stopped early
    } catch (e) {
      showError(e);
    }
  }
  renderConversation();
  setBusy(false);
}

function setBusy(busy: boolean): void {
  ui.send.hidden = busy;
  ui.stop.hidden = !busy;
  document.body.classList.toggle("busy", busy);
}

function autosize(): void {
  ui.input.style.height = "auto";
  ui.input.style.height = `${Math.min(ui.input.scrollHeight, 200)}px`;
}

// -- export / import ----------------------------------------------------------------------
async function exportConversation(): Promise<void> {
  if (!conv) return showError("Open a conversation to export it.");
  const data = await api.get(conv.id);
  downloadJson(data.title || "conversation", data);
}

async function importFile(file: File): Promise<void> {
  try {
    const data = JSON.parse(await file.text());
    const items = Array.isArray(data) ? data : [data];
    let last: Conv | null = null;
    for (const item of items) last = await api.import(item);
    await refreshList();
    if (last) await open(last.id);
  } catch (e) {
    showError(e instanceof SyntaxError ? `Not a JSON file: ${e.message}` : e);
  }
}

// -- wiring -------------------------------------------------------------------------------
function wire(): void {
  $("composer").addEventListener("submit", (e) => {
    e.preventDefault();
    void send(ui.input.value);
  });
  ui.input.addEventListener("keydown", (e) => {
    // Enter sends; Shift+Enter is a new line; Enter that confirms an IME candidate (Chinese input) does neither.
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing && e.keyCode !== 229) {
      e.preventDefault();
      void send(ui.input.value);
    }
  });
  ui.input.addEventListener("input", autosize);
  ui.stop.addEventListener("click", () => controller?.abort());
  $("new-chat").addEventListener("click", () => {
    conv = null;
    localStorage.removeItem("chatsmith.open");
    renderConversation();
    void refreshList();
    ui.input.focus();
  });
  let timer = 0;
  ui.search.addEventListener("input", () => {
    clearTimeout(timer);
    timer = window.setTimeout(() => void refreshList().catch(showError), 200);
  });
  $("settings-toggle").addEventListener("click", () => (ui.settings.hidden = !ui.settings.hidden));
  for (const input of ["system", "temperature", "top_p", "max_tokens"].map((id) => $(id))) {
    input.addEventListener("change", () => {
      saveDefaults();
      if (conv) void api.patch(conv.id, { settings: settings() }).catch(showError);
    });
  }
  ui.key.value = apiKey();
  ui.key.addEventListener("change", () => {
    setApiKey(ui.key.value);
    void start();
  });
  $("theme").addEventListener("click", toggleTheme);
  $("menu").addEventListener("click", () => document.body.classList.toggle("sidebar-open"));
  $("export").addEventListener("click", () => void exportConversation().catch(showError));
  const imp = $<HTMLInputElement>("import");
  imp.addEventListener("change", () => {
    if (imp.files?.[0]) void importFile(imp.files[0]);
    imp.value = "";
  });
}

async function start(): Promise<void> {
  clearError();
  try {
    model = (await api.models()).data[0]?.id ?? "";
    ui.model.textContent = model || "chatsmith";
    await refreshList();
    const last = localStorage.getItem("chatsmith.open");
    if (last) await open(last).catch(() => localStorage.removeItem("chatsmith.open"));
    else renderConversation();
  } catch (e) {
    showError(e);
    renderConversation();
  }
}

initTheme();
applySettings({});
wire();
void start();
