// The generate form: shows the chosen model's parameters, the chosen image source, size presets,
// an image preview with the size limit, checks as you type, and prompt enhancement.
// The rules come from the server-rendered attributes (min, max, step, maxlength), which the server
// derives from the job definition; the server checks everything again on submit.
import { csrfToken } from "./common.js";

const form = document.getElementById("generate-form");
const modelSelect = document.getElementById("model");
const maxUpload = Number(form.dataset.maxUpload);

function showModel() {
  const model = modelSelect.value;
  document.querySelectorAll("fieldset.params").forEach((fieldset) => {
    const active = fieldset.dataset.model === model;
    fieldset.hidden = !active;
    fieldset.disabled = !active; // disabled fields are not submitted
  });
  document.querySelectorAll(".wait").forEach((wait) => { wait.hidden = wait.dataset.model !== model; });
}

function showSource() {
  const chosen = form.querySelector('input[name="image_source"]:checked');
  const source = chosen ? chosen.value : "upload";
  document.querySelectorAll(".source").forEach((block) => {
    const active = block.dataset.source === source;
    block.hidden = !active;
    block.querySelectorAll("input").forEach((input) => { input.disabled = !active; });
  });
  document.getElementById("image").required = source === "upload";
  document.getElementById("image_url").required = source === "url";
}

function explain(input) {
  input.setCustomValidity("");
  if (input.validity.valid) {
    input.removeAttribute("aria-invalid");
    return;
  }
  const { min, max, step } = input;
  if (input.validity.stepMismatch || input.validity.rangeUnderflow || input.validity.rangeOverflow) {
    const every = step && step !== "any" && step !== "1" ? `, in steps of ${step} from ${min}` : "";
    input.setCustomValidity(`Enter a number from ${min} to ${max}${every}.`);
  }
  input.setAttribute("aria-invalid", "true");
}

function checkImage(input) {
  input.setCustomValidity("");
  const preview = document.getElementById("preview");
  const file = input.files && input.files[0];
  if (!file) {
    preview.hidden = true;
    return;
  }
  if (file.size > maxUpload) {
    input.setCustomValidity(`The image is ${file.size} bytes; the limit is ${maxUpload} bytes.`);
    input.reportValidity();
  } else if (!["image/png", "image/jpeg", "image/webp"].includes(file.type)) {
    input.setCustomValidity("Choose a PNG, JPEG or WebP image.");
    input.reportValidity();
  }
  preview.src = URL.createObjectURL(file);
  preview.hidden = false;
}

function dropTarget(zone, input) {
  ["dragenter", "dragover"].forEach((name) => zone.addEventListener(name, (event) => {
    event.preventDefault();
    zone.classList.add("dragging");
  }));
  ["dragleave", "drop"].forEach((name) => zone.addEventListener(name, () => zone.classList.remove("dragging")));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    if (event.dataTransfer && event.dataTransfer.files.length) {
      input.files = event.dataTransfer.files;
      checkImage(input);
    }
  });
}

function enhancement() {
  const button = document.getElementById("enhance");
  if (!button) return;
  const prompt = document.getElementById("prompt");
  const box = document.getElementById("suggestion");
  const text = document.getElementById("suggestion-text");
  const failure = document.getElementById("enhance-error");
  const sync = () => { button.disabled = !prompt.value.trim(); };
  prompt.addEventListener("input", sync);
  sync();
  button.addEventListener("click", async () => {
    button.disabled = true;
    button.setAttribute("aria-busy", "true");
    failure.hidden = true;
    try {
      const response = await fetch("/api/v1/enhance-prompt", {
        method: "POST",
        headers: { "Content-Type": "application/json", "X-CSRF-Token": csrfToken() },
        body: JSON.stringify({ prompt: prompt.value, model: modelSelect.value }),
        credentials: "same-origin",
      });
      const body = await response.json();
      if (!response.ok) throw new Error([body.error, ...(body.details || [])].join(": "));
      text.textContent = body.prompt;
      box.hidden = false;
      document.getElementById("suggestion-accept").focus();
    } catch (error) {
      failure.textContent = `No suggestion: ${error.message}`;
      failure.hidden = false;
    } finally {
      button.removeAttribute("aria-busy");
      sync();
    }
  });
  document.getElementById("suggestion-accept").addEventListener("click", () => {
    prompt.value = text.textContent;
    box.hidden = true;
    prompt.focus();
  });
  document.getElementById("suggestion-reject").addEventListener("click", () => {
    box.hidden = true;
    prompt.focus();
  });
}

modelSelect.addEventListener("change", showModel);
form.querySelectorAll('input[name="image_source"]').forEach((radio) => radio.addEventListener("change", showSource));
form.querySelectorAll("input[type=number], input[type=url], textarea").forEach((input) => {
  input.addEventListener("input", () => explain(input));
});
document.querySelectorAll(".preset").forEach((button) => button.addEventListener("click", () => {
  const width = document.getElementById("param-width");
  const height = document.getElementById("param-height");
  width.value = button.dataset.width;
  height.value = button.dataset.height;
  explain(width);
  explain(height);
}));
const imageInput = document.getElementById("image");
imageInput.addEventListener("change", () => checkImage(imageInput));
dropTarget(document.getElementById("dropzone"), imageInput);
form.querySelector(".hint").hidden = true;
showModel();
showSource();
enhancement();
