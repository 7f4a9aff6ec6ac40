// ModelSwitch dashboard: tells the person when an htmx request fails. htmx
// swaps nothing on a 4xx or 5xx (see responseHandling in the layout), so a
// refused, rate-limited or failed action would otherwise look like nothing
// happened. The message is the server's own (its answer's
// [data-error-message]), shown in the page's alert region, #alerts.
(function () {
  "use strict";

  var fallbacks = {
    0: "ModelSwitch could not be reached. Check your connection and try again.",
    403: "This form has expired. Reload the page and try again.",
    429: "Too many requests. Wait a moment and try again.",
    503: "ModelSwitch is busy. Nothing was changed; try again in a moment."
  };

  function messageOf(xhr) {
    var text = "";
    var type = xhr.getResponseHeader("Content-Type") || "";
    if (type.indexOf("text/html") === 0) {
      // Parsed, never inserted: no script in it runs.
      var doc = new DOMParser().parseFromString(xhr.responseText, "text/html");
      var el = doc.querySelector("[data-error-message]");
      if (el) text = el.textContent.trim();
    }
    return text || fallbacks[xhr.status] ||
      "Something went wrong (error " + xhr.status + "). Nothing may have changed; try again.";
  }

  function show(message) {
    var region = document.getElementById("alerts");
    var template = document.getElementById("alert-template");
    if (!region || !template) return;
    var alert = template.content.firstElementChild.cloneNode(true);
    alert.querySelector("[data-alert-text]").textContent = message;
    // One message at a time: the latest is the one that matters.
    region.replaceChildren(alert);
  }

  function clear() {
    var region = document.getElementById("alerts");
    if (region) region.replaceChildren();
  }

  document.addEventListener("htmx:responseError", function (e) {
    show(messageOf(e.detail.xhr));
  });
  document.addEventListener("htmx:sendError", function () {
    show(fallbacks[0]);
  });
  // A new try starts clean.
  document.addEventListener("htmx:beforeRequest", clear);

  document.addEventListener("click", function (e) {
    if (e.target.closest("[data-alert-dismiss]")) clear();
  });
})();
