// Keyboard shortcuts of the blind A/B page: a / b / t choose, digits rate (0 = 10), Enter submits.
(function () {
  "use strict";
  const form = document.getElementById("ab-form");
  if (!form) return;
  const ratings = Array.from(form.querySelectorAll("input[data-rating]"));
  let active = 0;

  function highlight(index) {
    active = Math.max(0, Math.min(index, ratings.length - 1));
    ratings.forEach((input, i) => input.classList.toggle("active", i === active));
  }

  function choose(value) {
    const radio = form.querySelector('input[name="choice"][value="' + value + '"]');
    if (radio) radio.checked = true;
  }

  ratings.forEach((input, i) => input.addEventListener("focus", () => highlight(i)));

  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    const key = event.key;
    if (key === "Enter") {
      event.preventDefault();
      form.requestSubmit();
    } else if (key === "a" || key === "A") {
      event.preventDefault();
      choose("A");
    } else if (key === "b" || key === "B") {
      event.preventDefault();
      choose("B");
    } else if (key === "t" || key === "T") {
      event.preventDefault();
      choose("tie");
    } else if (/^[0-9]$/.test(key)) {
      event.preventDefault();
      ratings[active].value = key === "0" ? "10" : key;
      const next = Math.min(active + 1, ratings.length - 1);
      if (document.activeElement && ratings.includes(document.activeElement)) ratings[next].focus();
      highlight(next);
    }
  });

  highlight(0);
})();
