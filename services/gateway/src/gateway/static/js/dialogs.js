// A modal <dialog> as a question: resolves with the value of the button that closed it.

export function ask(dialog, onOpen = () => {}) {
  dialog.returnValue = "";
  dialog.showModal();
  onOpen();
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue), { once: true });
  });
}
