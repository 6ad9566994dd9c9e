// Where a reload picks up an answer in flight: per conversation, the event id
// just before it, kept in localStorage.

const resumeKey = (id) => `livechat.resume.${id}`;

export function loadResume(id) {
  try {
    const value = localStorage.getItem(resumeKey(id));
    return value === null ? null : Number(value);
  } catch {
    return null;
  }
}

export function saveResume(id, eventId) {
  try {
    localStorage.setItem(resumeKey(id), String(eventId));
  } catch {
    // No storage: a reload shows the answer once it is stored.
  }
}

export function clearResume(id) {
  try {
    localStorage.removeItem(resumeKey(id));
  } catch {
    // Nothing stored.
  }
}
