// Keyboard use of the dataset validation page: a approve, e edit, r reject, Enter submits.
// In a text box keys type as usual: Ctrl/Cmd+Enter submits, Esc leaves the box.
(function () {
  "use strict";
  const form = document.getElementById("dataset-form");
  if (!form) return;
  const edit = document.getElementById("edit-fields");
  const answer = document.getElementById("edit-answer");
  const reason = document.getElementById("reason");

  function choose(value) {
    const radio = form.querySelector('input[name="action"][value="' + value + '"]');
    if (radio) radio.checked = true;
    edit.hidden = value !== "edit";
  }

  form.querySelectorAll('input[name="action"]').forEach((radio) => {
    radio.addEventListener("change", () => choose(radio.value));
  });
  edit.querySelectorAll("textarea").forEach((box) => {
    box.addEventListener("input", () => choose("edit"));
  });

  document.addEventListener("keydown", (event) => {
    const target = event.target;
    const typing = target instanceof HTMLTextAreaElement || (target instanceof HTMLInputElement && target.type === "text");
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      form.requestSubmit();
      return;
    }
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if (typing) {
      if (event.key === "Escape") target.blur();
      else if (event.key === "Enter" && target === reason) {
        event.preventDefault();
        form.requestSubmit();
      }
      return;
    }
    if (target instanceof HTMLButtonElement || target instanceof HTMLAnchorElement) return;
    const key = event.key.toLowerCase();
    if (event.key === "Enter") {
      event.preventDefault();
      form.requestSubmit();
    } else if (key === "a") {
      event.preventDefault();
      choose("approve");
    } else if (key === "e") {
      event.preventDefault();
      choose("edit");
      answer.focus();
    } else if (key === "r") {
      event.preventDefault();
      choose("reject");
      reason.focus();
    }
  });

  const checked = form.querySelector('input[name="action"]:checked');
  choose(checked ? checked.value : "");
})();
