// prefstudio: fills a slug field from the name as it is typed (the new-project form), the way Django's
// slugify does on the server when the slug is left empty. Once the slug is edited by hand it is left
// alone; emptying it hands it back to the name. Without JavaScript the server makes it from the name.
(function () {
  "use strict";

  function slugify(text, maxLength) {
    return text.normalize("NFKD").replace(/[^\x00-\x7F]/g, "").toLowerCase()
      .replace(/[^\w\s-]/g, "").replace(/[-\s]+/g, "-").replace(/^[-_]+|[-_]+$/g, "")
      .slice(0, maxLength).replace(/-+$/, "");
  }

  function follow(slug) {
    var name = document.getElementById(slug.getAttribute("data-slug-from"));
    if (!name) { return; }
    var maxLength = parseInt(slug.getAttribute("maxlength"), 10) || 64;
    var byHand = slug.value !== "" && slug.value !== slugify(name.value, maxLength);
    name.addEventListener("input", function () {
      if (!byHand) { slug.value = slugify(name.value, maxLength); }
    });
    slug.addEventListener("input", function () {
      byHand = slug.value !== "" && slug.value !== slugify(name.value, maxLength);
    });
  }

  function start() {
    document.querySelectorAll("input[data-slug-from]").forEach(follow);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
