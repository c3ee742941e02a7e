// The chat page: wiring and start. Each part lives in its own module: state (elements and
// state), view (one conversation), chat (sending and answers), sidebar (the list), transfer
// (export/import), models, settings, errors.
import "highlight.js/styles/github-dark.css";
import "katex/dist/katex.min.css";
import "./style.css";
import { api, apiKey, setApiKey } from "./api";
import { leaveAnswer, restoreDraft, retry, saveDraft, send, submitEdit, switchTo } from "./chat";
import { samplingProblems } from "./checks";
import { $ } from "./dom";
import { clearError, showError, wireErrors } from "./errors";
import { loadModels, wireModels } from "./models";
import {
  applySettings,
  initTheme,
  readSettings,
  samplingFields,
  saveDefaults,
  showProblems,
  toggleTheme,
} from "./settings";
import { listHooks, refreshList, setSidebar, wireSidebar } from "./sidebar";
import { state, ui } from "./state";
import { exportAll, exportConversation, importFile } from "./transfer";
import { actions, renderConversation } from "./view";

async function open(id: string): Promise<void> {
  leaveAnswer();
  state.conv = await api.get(id);
  applySettings(state.conv.settings ?? {});
  localStorage.setItem("chatsmith.open", id);
  setSidebar(false);
  renderConversation();
  await refreshList();
}

function newChat(): void {
  leaveAnswer(); // the server keeps the partial answer, marked as stopped
  clearError();
  state.conv = null;
  localStorage.removeItem("chatsmith.open");
  renderConversation();
  void refreshList().catch(showError);
  setSidebar(false);
  ui.input.focus();
}

function wireComposer(): void {
  $("composer").addEventListener("submit", (e) => {
    e.preventDefault();
    void send();
  });
  ui.input.addEventListener("keydown", (e) => {
    // Enter sends; Shift+Enter is a new line; Enter that confirms an IME candidate (Chinese input) does neither.
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing && e.keyCode !== 229) {
      e.preventDefault();
      void send();
    }
  });
  ui.input.addEventListener("input", () => {
    ui.input.style.height = "auto";
    ui.input.style.height = `${Math.min(ui.input.scrollHeight, 200)}px`;
    saveDraft();
  });
  ui.stop.addEventListener("click", () => state.controller?.abort());
}

function wireSettings(): void {
  const toggle = $("settings-toggle");
  toggle.addEventListener("click", () => {
    ui.settings.hidden = !ui.settings.hidden;
    toggle.setAttribute("aria-expanded", String(!ui.settings.hidden));
  });
  for (const input of ["system", "temperature", "top_p", "max_tokens"].map((id) => $(id))) {
    input.addEventListener("change", () => {
      const problems = samplingProblems(samplingFields());
      showProblems(problems);
      if (Object.keys(problems).length) return; // the server would refuse every answer with it
      saveDefaults();
      if (state.conv) void api.patch(state.conv.id, { settings: readSettings() }).catch(showError);
    });
  }
  ui.key.value = apiKey();
  ui.key.addEventListener("change", () => {
    setApiKey(ui.key.value);
    void start();
  });
  const theme = $("theme");
  theme.setAttribute("aria-pressed", String(document.documentElement.classList.contains("dark")));
  theme.addEventListener("click", () => {
    toggleTheme();
    theme.setAttribute("aria-pressed", String(document.documentElement.classList.contains("dark")));
  });
}

function wireList(): void {
  listHooks.open = (id) => void open(id).catch((e) => showError(e, { retry: () => listHooks.open(id) }));
  listHooks.closed = () => {
    state.conv = null;
    localStorage.removeItem("chatsmith.open");
    renderConversation();
  };
  $("new-chat").addEventListener("click", newChat);
  let timer = 0;
  ui.search.addEventListener("input", () => {
    clearTimeout(timer);
    timer = window.setTimeout(() => void refreshList().catch(showError), 200);
  });
  $("export").addEventListener("click", () => void exportConversation().catch(showError));
  $("export-all").addEventListener("click", () => void exportAll().catch(showError));
  const imp = $<HTMLInputElement>("import");
  $("import-button").addEventListener("click", () => imp.click());
  imp.addEventListener("change", () => {
    const file = imp.files?.[0];
    imp.value = "";
    if (file) void importFile(file).then((id) => (id ? open(id) : undefined)).catch(showError);
  });
}

function wire(): void {
  actions.retry = (m) => void retry(m);
  actions.edit = (m, text) => void submitEdit(m, text);
  actions.switchTo = (m) => void switchTo(m);
  wireErrors();
  wireComposer();
  wireSettings();
  wireList();
  wireSidebar();
  wireModels();
}

async function start(): Promise<void> {
  clearError();
  try {
    await loadModels();
    await refreshList();
    const last = localStorage.getItem("chatsmith.open");
    if (last) await open(last).catch(() => localStorage.removeItem("chatsmith.open"));
    else renderConversation();
  } catch (e) {
    showError(e, { retry: () => void start() });
    renderConversation();
  }
  ui.input.focus();
}

initTheme();
applySettings({});
restoreDraft();
wire();
void start();
