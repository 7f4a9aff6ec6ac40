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
      root.querySelectorAll("button, input, textarea, a[href], [tabindex]:not([tabindex='-1'])"),
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

// ---- Keys console: the API Keys and Billing Keys tables ----------------
// One row pop-over open at a time, closed by a click outside, Escape or its
// Cancel button; after a row action or a search that htmx swaps in, focus
// goes where the server says (data-focus) or back to the control that had
// it, and what happened is announced once in a polite live region and shown
// in a toast that screen readers skip.
(function () {
  "use strict";

  function popovers() {
    return Array.prototype.slice.call(document.querySelectorAll("details[data-popover]"));
  }

  // toggle does not bubble: listen in the capture phase.
  document.addEventListener("toggle", function (e) {
    var d = e.target;
    if (!(d instanceof HTMLDetailsElement) || !d.hasAttribute("data-popover") || !d.open) return;
    popovers().forEach(function (o) {
      if (o !== d && o.open) o.open = false;
    });
    var panel = d.querySelector(".popover-panel");
    if (panel) panel.scrollIntoView({ block: "nearest", inline: "nearest" });
    var field = d.querySelector("[aria-invalid=true]") || d.querySelector("input:not([type=hidden]), select");
    if (field) field.focus();
  }, true);

  document.addEventListener("click", function (e) {
    popovers().forEach(function (d) {
      if (d.open && !d.contains(e.target)) d.open = false;
    });
    var cancel = e.target.closest("[data-action=close-popover]");
    if (cancel && cancel.closest("details[data-popover]")) {
      // Without JavaScript this button reloads the list; here it only closes.
      e.preventDefault();
      var d = cancel.closest("details[data-popover]");
      d.open = false;
      d.querySelector("summary").focus();
      return;
    }
    var create = e.target.closest("[data-action=focus-create]");
    var name = document.getElementById("key-name");
    if (create && name) {
      e.preventDefault();
      name.focus();
    }
  });

  // Escape with focus outside every pop-over still closes them (the handler
  // above closes the one that holds focus).
  document.addEventListener("keydown", function (e) {
    if (e.key !== "Escape" || document.getElementById("reveal-modal")) return;
    popovers().forEach(function (d) {
      if (d.open && !d.contains(document.activeElement)) d.open = false;
    });
  });

  function announce(text) {
    var live = document.getElementById("keys-live");
    if (!live || !text) return;
    // Emptied first, so that the same words twice are announced twice.
    live.textContent = "";
    setTimeout(function () { live.textContent = text; }, 50);
  }

  function toast(text) {
    var region = document.getElementById("toast-region");
    if (!region) return;
    // One at a time: a new result replaces the one before.
    region.textContent = "";
    var t = document.createElement("div");
    t.className = "toast";
    t.setAttribute("data-testid", "toast");
    t.textContent = text;
    region.appendChild(t);
    setTimeout(function () {
      t.classList.add("opacity-0");
      setTimeout(function () { t.remove(); }, 300);
    }, 4000);
  }

  var swapping = null; // what had focus in the card that htmx is replacing

  document.addEventListener("htmx:beforeSwap", function (e) {
    var target = e.detail.target;
    if (!target || target.id !== "keys-card") return;
    var a = document.activeElement;
    swapping = { focusID: a && a !== document.body && target.contains(a) ? a.id : "" };
  });

  document.addEventListener("htmx:afterSettle", function () {
    var was = swapping;
    var card = document.getElementById("keys-card");
    if (!was || !card || card.dataset.settled) return;
    swapping = null;
    card.dataset.settled = "1";
    var notice = card.getAttribute("data-notice");
    if (notice) {
      announce(notice);
      toast(notice);
    } else {
      // A search, sort or page: say what the list holds now.
      var summary = card.querySelector("#keys-summary, [data-testid=keys-no-match] p, [data-testid=list-error]");
      if (summary) announce(summary.textContent.trim());
    }
    var target = card.querySelector("details[open] [aria-invalid=true]") ||
      (card.dataset.focus && document.getElementById(card.dataset.focus)) ||
      (was.focusID && document.getElementById(was.focusID)) ||
      document.getElementById("keys-summary") || document.getElementById("keys-q");
    if (!target) return;
    target.focus();
    if (target.id === "keys-q") target.setSelectionRange(target.value.length, target.value.length);
  });
})();
