// What the page tells a person: the live status line, alerts, and
// announcements for screen readers (an aria-live region).

const announcer = document.getElementById("announcer");
const line = document.getElementById("status-line");
const banner = document.getElementById("banner");

export function announce(text) {
  announcer.textContent = "";
  setTimeout(() => {
    announcer.textContent = text;
  }, 50);
}

export function statusLine(text, kind = "") {
  line.textContent = text;
  line.dataset.kind = kind;
}

export function showBanner(text) {
  banner.textContent = text;
  banner.hidden = !text;
}
