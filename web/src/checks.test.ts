import { describe, expect, it } from "vitest";
import { ApiError } from "./api";
import { samplingProblems, titleProblem } from "./checks";
import { StreamError } from "./stream";
import { humanError, UNREACHABLE } from "./words";

describe("sampling checks", () => {
  it("accepts the server's ranges and refuses values outside, naming the range", () => {
    expect(samplingProblems({ temperature: 0, top_p: 1, max_tokens: 1 })).toEqual({});
    expect(samplingProblems({ temperature: 2, top_p: 0.01 })).toEqual({});
    expect(samplingProblems({})).toEqual({});
    expect(samplingProblems({ temperature: 5 }).temperature).toContain("between 0 and 2");
    expect(samplingProblems({ temperature: -0.1 }).temperature).toBeDefined();
    expect(samplingProblems({ temperature: NaN }).temperature).toBeDefined();
    expect(Object.keys(samplingProblems({ top_p: 0, max_tokens: 1.5 }))).toEqual(["top_p", "max_tokens"]);
  });
  it("refuses empty titles and titles over 500 characters (counted as characters, not UTF-16 units)", () => {
    expect(titleProblem("Zebra facts 斑马")).toBe("");
    expect(titleProblem("  ")).not.toBe("");
    expect(titleProblem("x".repeat(500))).toBe("");
    expect(titleProblem("x".repeat(501))).toContain("at most 500 characters (this one has 501)");
    expect(titleProblem("😀".repeat(500))).toBe("");
  });
});

describe("errors in words", () => {
  it("never shows the browser's or the validator's raw text", () => {
    expect(humanError(new ApiError(0, "TypeError: Failed to fetch"))).toBe(UNREACHABLE);
    expect(humanError(new TypeError("Failed to fetch"))).toBe(UNREACHABLE);
    const field = new ApiError(400, "messages.0.id: Field required");
    expect(humanError(field)).not.toContain("Field required");
    expect(humanError(field, "import")).toContain("not a conversation exported from chatsmith");
    expect(humanError(new ApiError(401, "missing key"))).toContain("API key");
    expect(humanError(new ApiError(500, "boom"))).toContain("Retry");
    expect(humanError(new StreamError("generation failed: x"))).toContain("failed while answering");
  });
  it("passes a server's plain sentence through", () => {
    expect(humanError(new ApiError(400, "parent_id must name a user message"))).toContain("must name a user message");
  });
});
