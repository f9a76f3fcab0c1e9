// Behaviour shared by every page: confirmations before destructive forms, and copy buttons.
// Without JavaScript, the server asks for the confirmation on a page of its own.

export function csrfToken() {
  const meta = document.querySelector('meta[name="csrf-token"]');
  return meta ? meta.content : "";
}

function confirmBeforeSubmit(form) {
  form.addEventListener("submit", (event) => {
    if (!window.confirm(form.dataset.confirm)) {
      event.preventDefault();
      return;
    }
    if (!form.querySelector('input[name="confirm"]')) {
      const confirmed = document.createElement("input");
      confirmed.type = "hidden";
      confirmed.name = "confirm";
      confirmed.value = "yes";
      form.append(confirmed);
    }
  });
}

function copyButton(button) {
  button.addEventListener("click", async () => {
    const source = document.querySelector(button.dataset.copy);
    if (!source) return;
    source.select();
    try {
      await navigator.clipboard.writeText(source.value);
    } catch {
      document.execCommand("copy");
    }
    const label = button.textContent;
    button.textContent = "Copied";
    setTimeout(() => { button.textContent = label; }, 1500);
  });
}

document.querySelectorAll("form[data-confirm]").forEach(confirmBeforeSubmit);
document.querySelectorAll("button[data-copy]").forEach(copyButton);
