// The error bar: words a person understands, a Retry where retrying makes sense, a Dismiss
// button; inside an assertive live region, so screen readers read it out.
import { ApiError } from "./api";
import { $ } from "./dom";
import { ui } from "./state";
import { humanError } from "./words";

const box = $<HTMLDivElement>("error");
const text = box.querySelector<HTMLSpanElement>(".error-text")!;
const retryButton = box.querySelector<HTMLButtonElement>(".error-retry")!;
let retry: (() => void) | null = null;

export interface ErrorOptions {
  retry?: () => void;
  doing?: string;
}

export function showError(e: unknown, opts: ErrorOptions = {}): void {
  text.textContent = humanError(e, opts.doing);
  retry = opts.retry ?? null;
  retryButton.hidden = !retry;
  box.hidden = false;
  if (e instanceof ApiError && e.status === 401) ui.settings.hidden = false;
}

export function clearError(): void {
  box.hidden = true;
  retry = null;
}

export function wireErrors(): void {
  box.querySelector(".error-close")!.addEventListener("click", clearError);
  retryButton.addEventListener("click", () => {
    const again = retry;
    clearError();
    again?.();
  });
}
