// Markdown → safe HTML. marked parses; DOMPurify removes anything executable (scripts, event
// handlers, javascript: URLs, forms, styles); a hook makes every link open in a new tab with
// rel="noopener nofollow" and drops links that are not http(s) or mailto.
import { marked } from "marked";
import DOMPurify from "dompurify";

marked.setOptions({ gfm: true, breaks: true });

const SAFE_HREF = /^(https?:|mailto:)/i;

DOMPurify.addHook("afterSanitizeAttributes", (node) => {
  if (node.tagName === "A") {
    const href = node.getAttribute("href") || "";
    if (!SAFE_HREF.test(href.trim())) {
      node.removeAttribute("href");
    } else {
      node.setAttribute("target", "_blank");
      node.setAttribute("rel", "noopener nofollow");
    }
  }
});

const PURIFY = {
  // Images are dropped too: a model (or a post it quotes) must not make the visitor's browser
  // fetch arbitrary URLs (tracking pixels).
  FORBID_TAGS: ["style", "form", "input", "button", "textarea", "select", "img", "iframe",
    "object", "embed", "svg", "math", "video", "audio", "source", "link", "meta", "base"],
  FORBID_ATTR: ["style", "srcset", "action", "formaction"],
  ALLOW_DATA_ATTR: false,
};

export function renderMarkdown(text) {
  const html = marked.parse(String(text || ""), { async: false });
  return DOMPurify.sanitize(html, PURIFY);
}

export function safeHref(url) {
  return typeof url === "string" && /^https?:\/\//i.test(url.trim()) ? url.trim() : null;
}
