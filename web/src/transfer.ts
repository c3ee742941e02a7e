// Export and import in one format: the conversation as GET /api/conversations/{id} gives it;
// "Export all" writes a JSON array of them, which Import reads back as it reads one.
import { api } from "./api";
import { showError } from "./errors";
import { downloadJson } from "./settings";
import { refreshList } from "./sidebar";
import { announce, state } from "./state";
import type { Conv } from "./tree";

export async function exportConversation(): Promise<void> {
  if (!state.conv) return showError("Open a conversation to export it, or use Export all.");
  const data = await api.get(state.conv.id);
  downloadJson(data.title || "conversation", data);
}

export async function exportAll(): Promise<void> {
  const { data } = await api.list("");
  const all: Conv[] = [];
  for (const c of data) all.push(await api.get(c.id));
  downloadJson("chatsmith-conversations", all);
  announce(`Exported ${all.length} conversations`);
}

/** Import one conversation or an array of them; returns the id of the last one imported. */
export async function importFile(file: File): Promise<string | null> {
  let data: unknown;
  try {
    data = JSON.parse(await file.text());
  } catch {
    showError(`Could not import ${file.name}: it is not a JSON file.`);
    return null;
  }
  const items = Array.isArray(data) ? data : [data];
  let last: Conv | null = null;
  try {
    for (const item of items) last = await api.import(item);
  } catch (e) {
    showError(e, { doing: "import" });
  }
  await refreshList().catch(showError);
  if (last) announce(`Imported ${items.length === 1 ? "1 conversation" : `${items.length} conversations`}`);
  return last?.id ?? null;
}
