// Progressive enhancement only: every page works without this script.
(function () {
  "use strict";
  // The viewer's time zone, so dates are shown in it from the next page on.
  try {
    var zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
    if (zone && document.cookie.indexOf("tessera_tz=" + encodeURIComponent(zone)) === -1) {
      document.cookie = "tessera_tz=" + encodeURIComponent(zone) + "; path=/; max-age=31536000; samesite=lax";
    }
  } catch (e) { /* no Intl: dates stay in UTC */ }
  // Copy buttons: <button data-copy="<id of the field>">.
  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-copy]");
    if (!button) { return; }
    var field = document.getElementById(button.getAttribute("data-copy"));
    if (!field) { return; }
    field.select();
    var done = function () { button.textContent = button.getAttribute("data-copied") || "✓"; };
    if (navigator.clipboard) { navigator.clipboard.writeText(field.value).then(done, function () {}); }
    else { document.execCommand("copy"); done(); }
  });
})();
