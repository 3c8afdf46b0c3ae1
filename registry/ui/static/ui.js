// Copy buttons for the pull lines: the only script of the interface, and optional
// (without it the line is still selectable in its read-only field).
"use strict";
document.addEventListener("click", function (event) {
  var button = event.target.closest(".copy-button");
  if (!button || !navigator.clipboard) {
    return;
  }
  navigator.clipboard.writeText(button.getAttribute("data-copy")).then(function () {
    button.textContent = "Copied";
    setTimeout(function () { button.textContent = "Copy"; }, 1500);
  });
});
