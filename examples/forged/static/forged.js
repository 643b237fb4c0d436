// Progressive enhancement only: every page works without this file.
document.addEventListener("click", function (e) {
  var b = e.target.closest("button[data-copy]");
  if (!b) return;
  var input = document.getElementById(b.dataset.copy);
  input.select();
  if (navigator.clipboard) navigator.clipboard.writeText(input.value);
  b.textContent = "Copied";
  setTimeout(function () { b.textContent = "Copy"; }, 1500);
});
// Fill in the last commit of each entry when the page was sent before they were known.
document.querySelectorAll("table.files[data-fill]").forEach(function (t) {
  fetch(t.dataset.fill, { credentials: "same-origin" })
    .then(function (r) { return r.ok ? r.text() : null; })
    .then(function (html) { if (html) t.outerHTML = html; });
});
