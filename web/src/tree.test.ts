import { describe, expect, it } from "vitest";
import { deepestLeaf, pathTo, siblings, type Msg } from "./tree";

const m = (id: string, parent: string | null, t: number): Msg => ({
  id,
  parent_id: parent,
  role: "user",
  content: id,
  created_at: t,
});
// u1 -> a1 ; u1 -> a1b (regenerated) -> u3 ; u2 (an edit of u1)
const msgs = [m("u1", null, 1), m("a1", "u1", 2), m("u2", null, 3), m("a1b", "u1", 4), m("u3", "a1b", 5)];

describe("conversation tree", () => {
  it("walks from the root to a leaf", () => {
    expect(pathTo(msgs, "u3").map((x) => x.id)).toEqual(["u1", "a1b", "u3"]);
    expect(pathTo(msgs, null)).toEqual([]);
    expect(pathTo(msgs, "missing")).toEqual([]);
  });
  it("lists siblings in creation order", () => {
    expect(siblings(msgs, msgs[0]).map((x) => x.id)).toEqual(["u1", "u2"]);
    expect(siblings(msgs, msgs[1]).map((x) => x.id)).toEqual(["a1", "a1b"]);
  });
  it("lands on the newest leaf of a branch", () => {
    expect(deepestLeaf(msgs, "u1")).toBe("u3");
    expect(deepestLeaf(msgs, "a1")).toBe("a1");
    expect(deepestLeaf(msgs, "u1", new Map([["u1", "a1"]]))).toBe("a1"); // the branch last shown
  });
});
