// A conversation is a tree of messages: editing a message or regenerating an answer adds a
// sibling. The page shows one path, from the root to the conversation's current leaf.

export interface Msg {
  id: string;
  parent_id: string | null;
  role: string;
  content: string;
  tool_calls?: unknown;
  created_at: number;
  /** "done", or for an answer the server streamed: "streaming" | "length" | "stopped" | "cut". */
  status?: string;
}

export interface Conv {
  id: string;
  title: string;
  current_leaf: string | null;
  settings: Record<string, unknown>;
  messages: Msg[];
  updated_at?: number;
}

export function children(msgs: Msg[], parentId: string | null): Msg[] {
  return msgs.filter((m) => m.parent_id === parentId).sort((a, b) => a.created_at - b.created_at);
}

export function siblings(msgs: Msg[], m: Msg): Msg[] {
  return children(msgs, m.parent_id);
}

/** The messages from the root down to `leaf` (empty when leaf is null or unknown). */
export function pathTo(msgs: Msg[], leaf: string | null): Msg[] {
  const byId = new Map(msgs.map((m) => [m.id, m]));
  const out: Msg[] = [];
  const seen = new Set<string>();
  let cur = leaf ? byId.get(leaf) : undefined;
  while (cur && !seen.has(cur.id)) {
    seen.add(cur.id);
    out.push(cur);
    cur = cur.parent_id ? byId.get(cur.parent_id) : undefined;
  }
  return out.reverse();
}

/** Follow children down from `id` to a leaf: the child last shown under each message
 *  (`shown`: parent id -> child id) or else the newest one. Where a branch switch lands. */
export function deepestLeaf(msgs: Msg[], id: string, shown: Map<string, string> = new Map()): string {
  let cur = id;
  for (;;) {
    const kids = children(msgs, cur);
    if (!kids.length) return cur;
    const pick = shown.get(cur);
    cur = kids.find((k) => k.id === pick)?.id ?? kids[kids.length - 1].id;
  }
}
