// tradewire CDP observer: reports Discord message rows to the monitor through a CDP binding.
//
// Runs in an isolated world (the page's own scripts cannot see or call it). Read-only: it
// never changes the page; it only reads rows `li#chat-messages-<channelId>-<messageId>` and
// their `[id^="message-content-<messageId>"]` text, and calls the binding with one JSON string
// {channelId, messageId, text, author, edit, url} per new or changed row. The monitor in
// Python dedupes (message id + text) and drops rows sent before it started, so re-rendered
// rows (virtualised list, channel switch, reload) are harmless.
//
// Installed twice on purpose (Page.addScriptToEvaluateOnNewDocument for future documents and
// Runtime.evaluate for the current one): the second run only re-scans.
(() => {
  const BINDING = "__tradewireEmit";
  // the new-document script also runs in iframes (embeds): only the tab's own page counts,
  // so a framed page cannot pass off rows of its own as Discord messages
  if (window.top !== window) return "frame";
  if (globalThis.__tradewireObserver) {
    globalThis.__tradewireObserver.rescan();
    return "rescanned";
  }
  const ROW_ID = /^chat-messages-(\d+)-(\d+)$/;
  const ROW_SELECTOR = 'li[id^="chat-messages-"]';
  const lastText = new Map(); // messageId -> text last reported by this document
  const edits = new Map(); // messageId -> edits seen by this document

  function contentText(node) {
    // text of a message-content element: text nodes, emoji alt text, line breaks;
    // the inline "(edited)" timestamp is not part of the message
    let out = "";
    for (const child of node.childNodes) {
      if (child.nodeType === Node.TEXT_NODE) {
        out += child.data;
      } else if (child.nodeType === Node.ELEMENT_NODE) {
        const el = child;
        const cls = typeof el.className === "string" ? el.className : "";
        if (el.tagName === "TIME" || /(^|\s)(edited|timestamp)/.test(cls)) continue;
        if (el.tagName === "BR") out += "\n";
        else if (el.tagName === "IMG") out += el.getAttribute("alt") || "";
        else out += contentText(el);
      }
    }
    return out;
  }

  function authorOf(row) {
    // Discord shows the author only on the first row of a group: walk back to it
    let current = row;
    for (let i = 0; current && i < 100; i += 1) {
      const name = current.querySelector('[id^="message-username-"]');
      if (name) return (name.textContent || "").trim() || null;
      current = current.previousElementSibling;
    }
    return null;
  }

  function report(row) {
    const match = ROW_ID.exec(row.id || "");
    if (!match) return;
    const [, channelId, messageId] = match;
    const content = row.querySelector(`[id^="message-content-${messageId}"]`);
    if (!content) return;
    const text = contentText(content);
    const previous = lastText.get(messageId);
    if (previous === text) return;
    const emit = globalThis[BINDING];
    if (typeof emit !== "function") return; // no monitor attached: stay quiet
    if (previous !== undefined) edits.set(messageId, (edits.get(messageId) || 0) + 1);
    lastText.set(messageId, text);
    emit(JSON.stringify({
      channelId, messageId, text, author: authorOf(row),
      edit: edits.get(messageId) || 0, url: location.href,
    }));
  }

  function rowOf(node) {
    const el = node.nodeType === Node.ELEMENT_NODE ? node : node.parentElement;
    return el ? el.closest(ROW_SELECTOR) : null;
  }

  function rescan() {
    lastText.clear(); // report every visible row again; the monitor dedupes
    document.querySelectorAll(ROW_SELECTOR).forEach(report);
  }

  const observer = new MutationObserver((mutations) => {
    const rows = new Set();
    for (const m of mutations) {
      const row = rowOf(m.target);
      if (row) rows.add(row);
      for (const added of m.addedNodes) {
        if (added.nodeType !== Node.ELEMENT_NODE) continue;
        if (added.matches(ROW_SELECTOR)) rows.add(added);
        else added.querySelectorAll(ROW_SELECTOR).forEach((r) => rows.add(r));
      }
    }
    rows.forEach(report);
  });
  // the whole document: Discord replaces the list container on channel switch
  observer.observe(document, { childList: true, subtree: true, characterData: true });
  globalThis.__tradewireObserver = { rescan };
  if (document.readyState !== "loading") rescan();
  return "installed";
})();
