// progressive enhancement only: every page works without it
document.addEventListener("DOMContentLoaded", function () {
  var all = document.getElementById("check-all");
  if (all) {
    all.addEventListener("change", function () {
      document.querySelectorAll("input.pick").forEach(function (b) { b.checked = all.checked; });
    });
  }
});
