// The model: its name in the header, or a picker when the server lists several.
import { api } from "./api";
import { state, ui } from "./state";

const CHOSEN = "chatsmith.model";

export async function loadModels(): Promise<void> {
  const ids = (await api.models()).data.map((m) => m.id);
  const saved = localStorage.getItem(CHOSEN) ?? "";
  state.model = ids.includes(saved) ? saved : (ids[0] ?? "");
  ui.model.textContent = state.model || "chatsmith";
  ui.model.hidden = ids.length > 1;
  ui.picker.hidden = ids.length < 2;
  ui.picker.replaceChildren(...ids.map((id) => new Option(id, id, false, id === state.model)));
}

export function wireModels(): void {
  ui.picker.addEventListener("change", () => {
    state.model = ui.picker.value;
    localStorage.setItem(CHOSEN, state.model);
  });
}
