// The operator console's only script: a card batch's progress, polled while it runs.
// Served from the console itself (the Content-Security-Policy allows no other script).
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  var box = document.getElementById("batch");
  if (!box || box.dataset.state !== "running") { return; }
  var bar = document.getElementById("batch-progress");
  var label = document.getElementById("batch-state");
  function poll() {
    fetch(box.dataset.progressUrl, { credentials: "same-origin" })
      .then(function (r) { return r.json(); })
      .then(function (job) {
        bar.value = job.done;
        document.getElementById("batch-done").textContent = job.done;
        if (job.state === "running") { setTimeout(poll, 500); return; }
        box.dataset.state = job.state;
        label.textContent = label.dataset[job.state] || job.state;
        document.getElementById("batch-numbers").textContent = job.first_card ? job.first_card + " – " + job.last_card : "";
        document.getElementById("batch-error").textContent = job.error || "";
      })
      .catch(function () { setTimeout(poll, 2000); });
  }
  setTimeout(poll, 300);
});
