// The page's elements and its few pieces of state, shared by the modules that draw and act.
import { $ } from "./dom";
import type { Conv } from "./tree";

export const ui = {
  list: $<HTMLUListElement>("conversations"),
  search: $<HTMLInputElement>("search"),
  messages: $<HTMLDivElement>("messages"),
  input: $<HTMLTextAreaElement>("input"),
  send: $<HTMLButtonElement>("send"),
  stop: $<HTMLButtonElement>("stop"),
  settings: $<HTMLElement>("settings"),
  key: $<HTMLInputElement>("api-key"),
  model: $<HTMLSpanElement>("model-name"),
  picker: $<HTMLSelectElement>("model-picker"),
  status: $<HTMLDivElement>("status"),
};

export const state = {
  model: "",
  conv: null as Conv | null,
  /** The answer streaming now; replaced or dropped by Stop, "+ New chat" or opening a chat. */
  controller: null as AbortController | null,
  /** parent id -> the child on screen, so switching back returns there */
  shown: new Map<string, string>(),
  /** answer id -> what the server said about fitting the history into the context */
  notes: new Map<string, string>(),
};

export function isBusy(): boolean {
  return document.body.classList.contains("busy");
}

export function setBusy(busy: boolean): void {
  ui.send.hidden = busy;
  ui.stop.hidden = !busy;
  ui.messages.setAttribute("aria-busy", String(busy)); // screen readers wait for the whole answer
  document.body.classList.toggle("busy", busy);
}

/** Say something to screen readers without moving focus ("Copied", "Deleted"). */
export function announce(text: string): void {
  ui.status.textContent = "";
  requestAnimationFrame(() => (ui.status.textContent = text));
}
