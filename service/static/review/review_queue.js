// Review queue page: correct or dismiss low-rated answers through the JSON API, keyboard first.
// j / k move between answers, c writes the correction, f checks it against the fact registry and the
// dataset rules, o writes the reason to keep an answer that fails a dataset rule (shown once one
// fails), Ctrl+Enter saves, d focuses the dismiss reason (Enter dismisses), Esc leaves a field.
// Every text from the server is set with textContent, never parsed as HTML.
(function () {
  "use strict";
  const root = document.getElementById("queue");
  if (!root) return;
  const csrf = root.dataset.csrf;
  const empty = document.getElementById("queue-empty");
  const count = document.getElementById("queue-count");
  const status = document.getElementById("queue-status");
  let total = Number(root.dataset.total) || 0;
  let current = null;

  function items() {
    return Array.from(root.querySelectorAll("article.item"));
  }

  function select(item, focus) {
    current = item;
    items().forEach((el) => el.classList.toggle("current", el === item));
    if (item && focus) {
      item.focus({ preventScroll: true });
      item.scrollIntoView({ block: "start" });
    }
  }

  function move(step) {
    const list = items();
    if (!list.length) return;
    const index = list.indexOf(current);
    select(list[Math.max(0, Math.min(list.length - 1, index < 0 ? 0 : index + step))], true);
  }

  function say(item, text) {
    const line = item.querySelector(".item-status");
    line.textContent = text;
    line.className = "item-status error";
    line.hidden = !text;
  }

  function errorText(data, code) {
    return data && data.error && data.error.message ? data.error.message : "The request failed (HTTP " + code + ").";
  }

  function offerOverride(item) {
    item.querySelector(".override").hidden = false;
  }

  async function post(item, suffix, body) {
    let response;
    try {
      response = await fetch("/review/api/queue/" + encodeURIComponent(item.dataset.id) + suffix, {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
        body: JSON.stringify(body),
      });
    } catch (error) {
      return { code: 0, data: { error: { message: "The service cannot be reached; try again." } } };
    }
    if (response.status === 401) {
      window.location.assign("/review/login?next=/review/queue");
    }
    let data = null;
    try {
      data = await response.json();
    } catch (error) {
      data = null;
    }
    return { code: response.status, data: data };
  }

  function showFacts(item, result) {
    const box = item.querySelector(".facts");
    box.replaceChildren();
    const head = document.createElement("p");
    if (result.ok) head.textContent = "No verified fact contradicts this answer and it passes the dataset rules.";
    else if (result.contradictions.length) head.textContent = "This answer contradicts a verified fact; it cannot be saved as it is:";
    else head.textContent = "This answer fails a dataset rule; fix it, or give an override reason to keep it:";
    box.className = "facts " + (result.ok ? "ok" : "bad");
    box.append(head);
    const lines = result.contradictions.concat(result.warnings).map((issue) => {
      const unconfirmed = result.warnings.includes(issue) ? " [fact not yet confirmed: warning only]" : "";
      return issue.fact_id + ": " + issue.statement + " — " + issue.detail + unconfirmed;
    });
    result.problems.forEach((problem) => {
      lines.push(problem.check + ": " + problem.message + (problem.overridable ? "" : " [cannot be overridden]"));
    });
    if (result.problems.some((problem) => problem.overridable)) offerOverride(item);
    if (!lines.length) return;
    const list = document.createElement("ul");
    lines.forEach((line) => {
      const entry = document.createElement("li");
      entry.textContent = line;
      list.append(entry);
    });
    box.append(list);
  }

  function leave(item, message) {
    const index = items().indexOf(item);
    item.remove();
    total = Math.max(0, total - 1);
    count.textContent = String(total);
    status.textContent = message;
    status.hidden = false;
    const rest = items();
    if (rest.length) {
      select(rest[Math.min(index, rest.length - 1)], true);
    } else if (total > 0) {
      window.location.reload();
    } else {
      current = null;
      empty.hidden = false;
      empty.focus();
    }
  }

  function busy(item, on) {
    item.querySelectorAll("button").forEach((button) => {
      button.disabled = on;
    });
  }

  // An answer's requests run one after another, in the order they were asked for: a save typed while
  // its check is still on the way waits for it, so the check's result never overwrites the save's.
  const pending = new WeakMap();

  function act(item, suffix, body, done) {
    const previous = pending.get(item) || Promise.resolve();
    const next = previous.catch(() => undefined).then(() => send(item, suffix, body, done));
    pending.set(item, next);
    return next;
  }

  async function send(item, suffix, body, done) {
    busy(item, true);
    const reply = await post(item, suffix, body);
    busy(item, false);
    if (reply.code === 200 || reply.code === 201) {
      done(reply.data);
    } else if (reply.code === 409) {
      leave(item, errorText(reply.data, reply.code));
    } else if (reply.code !== 401) {
      say(item, errorText(reply.data, reply.code));
      if (reply.data && reply.data.error && reply.data.error.code === "dataset_check_failed") offerOverride(item);
    }
  }

  function save(item) {
    const form = item.querySelector("form.correct");
    if (!form.reportValidity()) return;
    const fields = form.elements;
    const body = {
      action: "correct",
      correct_answer: fields.correct_answer.value,
      why_wrong: fields.why_wrong.value,
      lesson: fields.lesson.value,
    };
    const override = fields.override_reason.value.trim();
    if (override) body.override_reason = override;
    act(item, "", body, () => leave(item, "Correction saved; it will be part of the next training run."));
  }

  function check(item) {
    const answer = item.querySelector("form.correct").elements.correct_answer;
    if (!answer.reportValidity()) return;
    act(item, "/check", { correct_answer: answer.value }, (result) => {
      say(item, "");
      showFacts(item, result);
    });
  }

  function dismiss(item) {
    const form = item.querySelector("form.dismiss");
    if (!form.reportValidity()) return;
    act(item, "", { action: "dismiss", reason: form.elements.reason.value }, () => leave(item, "Dismissed."));
  }

  root.addEventListener("submit", (event) => {
    event.preventDefault();
    const item = event.target.closest("article.item");
    if (!item) return;
    if (event.target.matches("form.correct")) save(item);
    else dismiss(item);
  });

  root.addEventListener("click", (event) => {
    const button = event.target.closest("button.check");
    if (button) check(button.closest("article.item"));
  });

  root.addEventListener("focusin", (event) => {
    const item = event.target.closest("article.item");
    if (item && item !== current) select(item, false);
  });

  document.addEventListener("keydown", (event) => {
    const typing = event.target.matches && event.target.matches("textarea, input, select");
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      const item = event.target.closest ? event.target.closest("article.item") : null;
      if (item || current) {
        event.preventDefault();
        if (event.target.closest && event.target.closest("form.dismiss")) dismiss(item);
        else save(item || current);
      }
      return;
    }
    if (event.key === "Escape" && typing) {
      event.target.blur();
      if (current) current.focus({ preventScroll: true });
      return;
    }
    if (typing || event.ctrlKey || event.metaKey || event.altKey || !current) return;
    const key = event.key.toLowerCase();
    if (key === "j") move(1);
    else if (key === "k") move(-1);
    else if (key === "c") current.querySelector("textarea[name=correct_answer]").focus();
    else if (key === "d") current.querySelector("input[name=reason]").focus();
    else if (key === "o" && !current.querySelector(".override").hidden) {
      current.querySelector("textarea[name=override_reason]").focus();
    }
    else if (key === "f") check(current);
    else return;
    event.preventDefault();
  });

  select(items()[0] || null, false);
})();
