// prefstudio workbench: keyboard shortcuts, active time on task, and saying when a request failed.
// The page works without it.
(function () {
  "use strict";

  var KEYS = { "1": "left", ArrowLeft: "left", "2": "right", ArrowRight: "right", "3": "tie", "4": "both_bad" };
  var IDLE_AFTER_MS = 60000; // no input for a minute: not counted as active time
  var active = 0;
  var lastTick = Date.now();
  var lastInput = Date.now();

  function form() { return document.getElementById("judgment-form"); }

  // A page restored from the back-forward cache shows what was true when it was left: ask again.
  window.addEventListener("pageshow", function (event) {
    if (event.persisted) { window.location.reload(); }
  });

  function typing(target) {
    return target && (target.tagName === "TEXTAREA" || target.tagName === "SELECT" ||
      (target.tagName === "INPUT" && target.type !== "radio" && target.type !== "checkbox"));
  }

  function tick() {
    var now = Date.now();
    if (document.visibilityState === "visible" && now - lastInput < IDLE_AFTER_MS) {
      active += now - lastTick;
    }
    lastTick = now;
  }
  setInterval(tick, 1000);

  ["keydown", "mousemove", "mousedown", "wheel", "touchstart", "scroll"].forEach(function (type) {
    document.addEventListener(type, function () { lastInput = Date.now(); }, { passive: true, capture: true });
  });

  function stampActiveTime() {
    tick();
    var f = form();
    var field = f && f.querySelector("input[name=active_seconds]");
    if (field) { field.value = (active / 1000).toFixed(1); }
  }

  // Plain form posts and htmx both pass through here before the request leaves.
  document.addEventListener("submit", function (event) {
    if (event.target === form()) { stampActiveTime(); }
  }, true);
  document.addEventListener("htmx:configRequest", function (event) {
    if (event.target === form()) {
      stampActiveTime();
      event.detail.parameters.active_seconds = (active / 1000).toFixed(1);
    }
  });
  document.addEventListener("htmx:afterSwap", function (event) {
    if (event.target.id === "workbench" || event.detail.target.id === "workbench") {
      active = 0; lastTick = Date.now();
      window.scrollTo({ top: 0 });
      // Focus left on the pressed button would look like a choice already made on the new pair.
      var heading = document.getElementById("pair-heading");
      if (heading) { heading.focus({ preventScroll: true }); }
    }
  });

  // htmx swaps no 4xx/5xx answer and nothing comes back from a network error or a timeout: without a
  // word the page would look as if the verdict had been taken. The form keeps its inputs as they were;
  // its fault region (role=alert) says it was not saved and offers Retry, a submit button of the same
  // form: the verdict as it still stands goes to the same URL again. The server counts the same choice
  // for the same assignment once, so a retry after an answer lost on the way back stores nothing twice.
  function faultRegion(elt) {
    return elt && elt.closest && elt.closest("#workbench") && elt.querySelector(".wb-fault");
  }

  function statusInWords(status) {
    if (status === 403) { return "The server refused it (403): reload the page if this happens again."; }
    if (status === 404) { return "The server no longer has this pair for you (404)."; }
    if (status === 429) { return "The server is too busy just now (429)."; }
    if (status === 502 || status === 503 || status === 504) {
      return "The server is not available just now (" + status + ").";
    }
    if (status >= 500) { return "The server had an error (" + status + ")."; }
    return "The server did not accept it (" + status + ").";
  }

  function showFault(event, reason) {
    var region = faultRegion(event.detail.elt);
    if (!region) { return; }
    var text = document.createElement("span");
    text.textContent = region.getAttribute("data-not-saved") + " " + reason;
    var retry = document.createElement("button");
    retry.type = "submit";
    retry.textContent = "Retry";
    region.replaceChildren(text, retry);
  }

  document.addEventListener("htmx:responseError", function (event) {
    showFault(event, statusInWords(event.detail.xhr.status));
  });
  document.addEventListener("htmx:sendError", function (event) {
    showFault(event, "Could not reach the server: check the connection.");
  });
  document.addEventListener("htmx:timeout", function (event) {
    showFault(event, "The server did not answer in time.");
  });
  document.addEventListener("htmx:beforeRequest", function (event) {
    var region = faultRegion(event.detail.elt);
    if (region) { region.replaceChildren(); }
  });

  // What the verdict still lacks, in words (fieldsets say what they need in data-missing); "" if none.
  function missing(f) {
    var choice = f.querySelector("input[name=choice]:checked");
    var sets = f.querySelectorAll("fieldset[data-required], fieldset[data-required-for]");
    for (var i = 0; i < sets.length; i++) {
      var needed = sets[i].hasAttribute("data-required") ||
        (choice && sets[i].getAttribute("data-required-for").split(" ").indexOf(choice.value) >= 0);
      if (needed && !sets[i].querySelector("input:checked")) { return sets[i]; }
    }
    return null;
  }

  function say(id, text) {
    var status = document.getElementById(id);
    if (status) { status.textContent = text; }
  }

  function submitVerdict(f) {
    var lacking = missing(f);
    if (!lacking) { say("verdict-status", ""); f.requestSubmit(); return; }
    lacking.classList.add("needs-choice");
    say("verdict-status", lacking.getAttribute("data-missing"));
  }

  document.addEventListener("change", function (event) {
    var set = event.target.closest && event.target.closest("fieldset.needs-choice");
    if (set) { set.classList.remove("needs-choice"); say("verdict-status", ""); }
  });

  function toggleShortcuts() {
    var dialog = document.getElementById("shortcuts");
    if (!dialog) { return; }
    if (dialog.open) { dialog.close(); } else { dialog.showModal(); }
  }
  document.addEventListener("click", function (event) {
    if (event.target.closest("[data-shortcuts-toggle]")) { toggleShortcuts(); }
  });
  // A closed dialog (Escape, or its button) must not leave the focus on its now hidden button, where
  // Enter would belong to it: the focus goes back to the pair. ("close" does not bubble: capture it.)
  document.addEventListener("close", function (event) {
    var dialog = event.target;
    if (dialog.id !== "shortcuts" || !dialog.contains(document.activeElement)) { return; }
    var heading = document.getElementById("pair-heading");
    if (heading) { heading.focus(); } else { document.activeElement.blur(); }
  }, true);

  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey || typing(event.target)) { return; }
    var f = form();
    if (event.key === "?") { event.preventDefault(); toggleShortcuts(); return; }
    if (!f) { return; }
    var skip = document.getElementById("skip");
    var skipForm = skip && skip.open && skip.querySelector("form");
    if (skipForm) {
      // The skip reasons are open: number keys pick a reason, Enter skips, Escape goes back.
      var reasons = skipForm.querySelectorAll("input[name=reason]");
      var reason = reasons[parseInt(event.key, 10) - 1];
      if (reason) {
        event.preventDefault(); reason.checked = true; reason.focus(); say("skip-status", "");
      } else if (event.key === "Enter") {
        event.preventDefault();
        if (skipForm.querySelector("input[name=reason]:checked")) { skipForm.requestSubmit(); }
        else { say("skip-status", "Pick a reason first: press 1 to " + reasons.length + "."); }
      } else if (event.key === "Escape") {
        event.preventDefault(); skip.open = false; say("skip-status", "");
        skip.querySelector("summary").focus();
      }
      return;
    }
    var position = KEYS[event.key];
    if (position) {
      var radio = f.querySelector("input[name=choice][value=" + position + "]");
      if (radio) {
        event.preventDefault(); radio.checked = true; radio.focus();
        radio.dispatchEvent(new Event("change", { bubbles: true }));
      }
      return;
    }
    if (event.key === "Enter") {
      var control = event.target.closest && event.target.closest("a, button, summary");
      if (control && control.closest("dialog") && !control.closest("dialog[open]")) {
        control = null; // left focused by a dialog that has closed: not what the person is on
      }
      if (control && (control.tagName !== "BUTTON" || !f.contains(control))) {
        return; // a link, or a button of another form (the conflict's, the skip's), does its own thing
      }
      event.preventDefault();
      submitVerdict(f);
      return;
    }
    if (event.key === "s" || event.key === "S") {
      if (skip) {
        event.preventDefault();
        skip.open = true;
        var first = skip.querySelector("input[type=radio]");
        if (first) { first.focus(); }
      }
    }
  });
})();
