// prefstudio workbench: keyboard shortcuts and active time on task. The page works without it.
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
    }
  });

  function toggleShortcuts() {
    var dialog = document.getElementById("shortcuts");
    if (!dialog) { return; }
    if (dialog.open) { dialog.close(); } else { dialog.showModal(); }
  }
  document.addEventListener("click", function (event) {
    if (event.target.closest("[data-shortcuts-toggle]")) { toggleShortcuts(); }
  });

  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey || typing(event.target)) { return; }
    var f = form();
    if (event.key === "?") { event.preventDefault(); toggleShortcuts(); return; }
    if (!f) { return; }
    var skipForm = event.target.closest && event.target.closest("#skip form");
    if (skipForm) {
      // Inside the skip reasons: arrows and space pick a reason, Enter skips, Escape goes back.
      if (event.key === "Enter" && skipForm.querySelector("input[name=reason]:checked")) {
        event.preventDefault(); skipForm.requestSubmit();
      } else if (event.key === "Escape") {
        document.getElementById("skip").open = false;
      }
      return;
    }
    var position = KEYS[event.key];
    if (position) {
      var radio = f.querySelector("input[name=choice][value=" + position + "]");
      if (radio) { event.preventDefault(); radio.checked = true; radio.focus(); }
      return;
    }
    if (event.key === "Enter") {
      event.preventDefault();
      if (f.querySelector("input[name=choice]:checked")) { f.requestSubmit(); }
      else { f.querySelector(".choices").classList.add("needs-choice"); }
      return;
    }
    if (event.key === "s" || event.key === "S") {
      var skip = document.getElementById("skip");
      if (skip) {
        event.preventDefault();
        skip.open = true;
        var first = skip.querySelector("input[type=radio]");
        if (first) { first.focus(); }
      }
    }
  });
})();
