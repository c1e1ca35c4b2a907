// The dashboard's only script: copy buttons and confirmations. Pages work
// without it.
"use strict";

document.addEventListener("click", async (ev) => {
  const button = ev.target.closest("button[data-copy]");
  if (!button) return;
  const source = document.getElementById(button.dataset.copy);
  if (!source) return;
  const text = source.textContent.trim();
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    // No clipboard access (plain HTTP on another host): select the text
    // so that Ctrl-C copies it.
    const range = document.createRange();
    range.selectNodeContents(source);
    const sel = window.getSelection();
    sel.removeAllRanges();
    sel.addRange(range);
    button.textContent = "Press Ctrl-C";
    return;
  }
  button.textContent = "Copied";
  setTimeout(() => { button.textContent = "Copy"; }, 2000);
});

document.addEventListener("submit", (ev) => {
  const message = ev.target.dataset.confirm;
  if (message && !window.confirm(message)) ev.preventDefault();
});
