// prefstudio: typesets the math that labeling/rendering.py leaves as written ($...$, $$...$$, \(...\),
// \[...\]) with the vendored KaTeX (static/vendor/katex). TeX that KaTeX cannot read stays as written;
// without JavaScript every formula stays as written.
(function () {
  "use strict";

  var DELIMITERS = [["$$", "$$"], ["\\[", "\\]"], ["\\(", "\\)"], ["$", "$"]];

  function tex(text) {
    for (var i = 0; i < DELIMITERS.length; i++) {
      var open = DELIMITERS[i][0];
      var close = DELIMITERS[i][1];
      if (text.length >= open.length + close.length && text.indexOf(open) === 0 &&
          text.slice(-close.length) === close) {
        return text.slice(open.length, text.length - close.length);
      }
    }
    return null;
  }

  function typeset(root) {
    if (!window.katex || !root || !root.querySelectorAll) { return; }
    root.querySelectorAll(".math-inline, .math-display").forEach(function (element) {
      if (element.getAttribute("data-typeset")) { return; }
      var source = tex(element.textContent);
      if (source === null) { return; }
      try {
        window.katex.render(source, element, {
          displayMode: element.classList.contains("math-display"),
          throwOnError: true,
          trust: false,
          strict: "ignore"
        });
        element.setAttribute("data-typeset", "katex");
      } catch (error) {
        element.setAttribute("data-typeset", "failed");
        element.title = "Shown as written: " + error.message;
      }
    });
  }

  document.addEventListener("DOMContentLoaded", function () { typeset(document); });
  // htmx swaps in the next pair after every judgment.
  document.addEventListener("htmx:load", function (event) { typeset(event.target); });
}());
