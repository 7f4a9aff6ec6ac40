// ModelSwitch dashboard behaviour on top of htmx: the CSRF header on every
// htmx request, and the one-time reveal modal (copy, focus trap, Escape, a
// confirmation before closing an uncopied key, and removal of the key from
// the DOM on close).
(function () {
  "use strict";

  document.addEventListener("htmx:configRequest", function (e) {
    var meta = document.querySelector('meta[name="csrf-token"]');
    if (meta) e.detail.headers["X-CSRF-Token"] = meta.content;
  });

  var copied = false;
  var opener = null;

  function modal() {
    return document.getElementById("reveal-modal");
  }

  function focusables(root) {
    return Array.prototype.filter.call(
      root.querySelectorAll("button, input, a[href], [tabindex]:not([tabindex='-1'])"),
      function (el) { return !el.disabled && el.offsetParent !== null; }
    );
  }

  function open(m) {
    copied = false;
    opener = document.getElementById("key-name");
    var input = m.querySelector("[data-testid=revealed-key]");
    input.focus();
    input.select();
  }

  function close() {
    var m = modal();
    if (!m) return;
    var backdrop = m.parentElement;
    // Clear the value before removing it, so no stray reference keeps the key.
    m.querySelector("[data-testid=revealed-key]").value = "";
    backdrop.remove();
    copied = false;
    if (opener) opener.focus();
  }

  function askToClose() {
    var m = modal();
    if (!m) return;
    if (copied) return close();
    var confirmBox = m.querySelector("#close-confirm");
    confirmBox.hidden = false;
    confirmBox.querySelector("[data-action=close-back]").focus();
  }

  function copy() {
    var m = modal();
    var input = m.querySelector("[data-testid=revealed-key]");
    var done = function () {
      copied = true;
      var button = m.querySelector("[data-action=copy]");
      button.textContent = "Copied";
      m.querySelector("#copy-status").textContent = "Key copied to the clipboard.";
      m.querySelector("#close-confirm").hidden = true;
    };
    var fallback = function () {
      input.select();
      if (document.execCommand("copy")) done();
    };
    if (navigator.clipboard && navigator.clipboard.writeText) {
      navigator.clipboard.writeText(input.value).then(done, fallback);
    } else {
      fallback();
    }
  }

  document.addEventListener("click", function (e) {
    var target = e.target.closest("[data-action]");
    if (!target || !modal() || !modal().contains(target)) return;
    switch (target.dataset.action) {
      case "copy": copy(); break;
      case "close": askToClose(); break;
      case "close-anyway": close(); break;
      case "close-back":
        modal().querySelector("#close-confirm").hidden = true;
        modal().querySelector("[data-action=copy]").focus();
        break;
    }
  });

  document.addEventListener("keydown", function (e) {
    var m = modal();
    if (!m) return;
    if (e.key === "Escape") {
      e.preventDefault();
      askToClose();
      return;
    }
    if (e.key !== "Tab") return;
    var items = focusables(m);
    if (items.length === 0) return;
    var first = items[0], last = items[items.length - 1];
    if (!m.contains(document.activeElement)) {
      e.preventDefault();
      first.focus();
    } else if (e.shiftKey && document.activeElement === first) {
      e.preventDefault();
      last.focus();
    } else if (!e.shiftKey && document.activeElement === last) {
      e.preventDefault();
      first.focus();
    }
  });

  document.addEventListener("htmx:afterSettle", function () {
    var m = modal();
    if (m && !m.dataset.opened) {
      m.dataset.opened = "1";
      open(m);
    }
  });

  // A keyboard user who closes a <details> action menu keeps their place.
  document.addEventListener("keydown", function (e) {
    if (e.key !== "Escape" || modal()) return;
    var d = document.activeElement && document.activeElement.closest("details[open]");
    if (d) {
      d.open = false;
      d.querySelector("summary").focus();
    }
  });
})();
