// Model output -> safe HTML: Markdown (marked), code highlighting (highlight.js), math
// (KaTeX), then DOMPurify, so <script>, event handlers and javascript: links never run.
import DOMPurify from "dompurify";
import hljs from "highlight.js/lib/common";
import katex from "katex";
import { Marked, type TokenizerAndRendererExtension } from "marked";
import { markedHighlight } from "marked-highlight";

function tex(text: string, displayMode: boolean): string {
  return katex.renderToString(text, { displayMode, throwOnError: false, output: "htmlAndMathml" });
}

const mathBlock: TokenizerAndRendererExtension = {
  name: "mathBlock",
  level: "block",
  start: (src) => src.match(/\$\$|\\\[/)?.index,
  tokenizer(src) {
    const m = /^\$\$([\s\S]+?)\$\$/.exec(src) ?? /^\\\[([\s\S]+?)\\\]/.exec(src);
    if (m) return { type: "mathBlock", raw: m[0], text: m[1].trim() };
    return undefined;
  },
  renderer: (token) => `<div class="math">${tex(token.text, true)}</div>`,
};

const mathInline: TokenizerAndRendererExtension = {
  name: "mathInline",
  level: "inline",
  start: (src) => src.match(/\$|\\\(/)?.index,
  tokenizer(src) {
    // "$5 and $10" is money, not math: no space just inside the dollars, no digit after.
    const m = /^\$(?!\s)([^$\n]+?)(?<!\s)\$(?!\d)/.exec(src) ?? /^\\\(([\s\S]+?)\\\)/.exec(src);
    if (m) return { type: "mathInline", raw: m[0], text: m[1] };
    return undefined;
  },
  renderer: (token) => tex(token.text, false),
};

const md = new Marked(
  markedHighlight({
    emptyLangClass: "hljs",
    langPrefix: "hljs language-",
    highlight(code, lang) {
      const language = hljs.getLanguage(lang) ? lang : "plaintext";
      return hljs.highlight(code, { language }).value;
    },
  }),
  { gfm: true, breaks: true, extensions: [mathBlock, mathInline] },
);

DOMPurify.addHook("afterSanitizeAttributes", (node) => {
  if (node.tagName === "A") {
    node.setAttribute("target", "_blank");
    node.setAttribute("rel", "noopener noreferrer");
  }
});

export function renderMarkdown(text: string): string {
  const html = md.parse(text, { async: false }) as string;
  return DOMPurify.sanitize(html, { ADD_ATTR: ["target"], FORBID_TAGS: ["style", "form", "input"] });
}

/** Add a copy button to every code block inside `el`. */
export function addCopyButtons(el: HTMLElement): void {
  for (const pre of el.querySelectorAll("pre")) {
    if (pre.querySelector("button.copy-code")) continue;
    const b = document.createElement("button");
    b.className = "copy-code";
    b.type = "button";
    b.textContent = "Copy";
    b.addEventListener("click", () => {
      void copyText(pre.querySelector("code")?.textContent ?? pre.textContent ?? "").then(() => {
        b.textContent = "Copied";
        setTimeout(() => (b.textContent = "Copy"), 1200);
      });
    });
    pre.prepend(b);
  }
}

export async function copyText(text: string): Promise<void> {
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    // Without the clipboard API (plain http on another host): the old way.
    const t = document.createElement("textarea");
    t.value = text;
    document.body.append(t);
    t.select();
    document.execCommand("copy");
    t.remove();
  }
}
