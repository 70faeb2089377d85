"""Forms for project setup and dataset upload. Validation errors say what and where."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django import forms
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.forms import UserCreationForm
from django.template.defaultfilters import filesizeformat
from django.utils.text import slugify

from labeling.consensus import parse_share
from labeling.layouts import (
    LABEL_TARGETS,
    LABEL_VALUES,
    TARGETS,
    check_mapping,
    field_sources,
    guess_label_values,
    known_label_values,
    label_values_of,
    value_key,
)
from labeling.models import Adjudication, Assignment, Choice, ExportSnapshot, Membership, Project

RESERVED_SLUGS = {"new", "rubric-preview"}


class ProjectForm(forms.ModelForm):
    criteria_text = forms.CharField(
        label="Criteria",
        required=False,
        widget=forms.Textarea(
            attrs={"rows": 4, "placeholder": "Helpfulness: Which answer helps the user more?"}
        ),
        help_text="Optional. One per line: a short name, a colon, then the question annotators answer.",
    )

    class Meta:
        model = Project
        fields = [
            "name", "slug", "description", "rubric", "allow_tie", "allow_both_bad", "use_strength",
            "require_strength", "overlap", "lease_minutes", "gold_rate", "queue_order",
        ]  # fmt: skip
        widgets = {
            "description": forms.Textarea(attrs={"rows": 2}),
            "rubric": forms.Textarea(attrs={"rows": 12}),
        }
        labels = {"overlap": "Overlap k", "gold_rate": "Gold-item rate", "queue_order": "Queue order"}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        slug = self.fields["slug"]
        slug.required = False
        slug.help_text = (
            "The project's address: letters, digits, hyphens. Left empty, it is made from the name."
        )
        # A form sent without it (a script written before the setting) keeps the project's order.
        self.fields["queue_order"].required = False
        if self.instance.pk:
            self.fields["criteria_text"].initial = "\n".join(
                f"{c['name']}: {c['question']}" for c in self.instance.criteria
            )
        else:  # static/js/slug.js fills it from the name as it is typed, until the slug is edited by hand
            slug.widget.attrs["data-slug-from"] = self["name"].auto_id

    def clean_slug(self) -> str:
        slug = self.cleaned_data["slug"]
        if slug in RESERVED_SLUGS:
            raise forms.ValidationError(f"'{slug}' is used by a page of its own; pick another slug.")
        return slug

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if not data.get("slug") and "slug" not in self.errors and data.get("name"):
            slug = slugify(data["name"])[: Project._meta.get_field("slug").max_length].strip("-")
            if not slug:
                self.add_error("slug", "The name has no letters or digits a slug can use: write a slug.")
            elif slug in RESERVED_SLUGS:
                self.add_error("slug", f"'{slug}' is used by a page of its own; pick another slug.")
            else:
                data["slug"] = slug
        elif not data.get("slug") and "slug" not in self.errors:
            self.add_error("slug", "Write a slug, or a name to make it from.")
        return data

    def clean_queue_order(self) -> str:
        return self.cleaned_data["queue_order"] or self.instance.queue_order

    def clean_criteria_text(self) -> list[dict[str, str]]:
        criteria, seen = [], set()
        for number, raw in enumerate(self.cleaned_data["criteria_text"].splitlines(), start=1):
            line = raw.strip()
            if not line:
                continue
            name, colon, question = line.partition(":")
            name, question = name.strip(), question.strip()
            if not colon or not name or not question:
                raise forms.ValidationError(f"Line {number}: write 'Name: question' (got '{line[:60]}').")
            if len(name) > 40:
                raise forms.ValidationError(
                    f"Line {number}: the name '{name[:40]}…' is longer than 40 characters."
                )
            if name.lower() in seen:
                raise forms.ValidationError(f"Line {number}: '{name}' is listed twice.")
            seen.add(name.lower())
            criteria.append({"name": name, "question": question})
        return criteria

    def save(self, commit: bool = True) -> Project:
        self.instance.criteria = self.cleaned_data["criteria_text"]
        return super().save(commit)


class UploadForm(forms.Form):
    file = forms.FileField(
        help_text="JSONL (also .jsonl.gz), one JSON document (an array of records), CSV or TSV with a "
        "header row, or Parquet. The format is read from the content, not the name."
    )
    skip_invalid = forms.BooleanField(
        required=False,
        label="Skip invalid records",
        help_text="Import the good records and keep a downloadable report of the rejected ones. "
        "Without it, one invalid record imports nothing.",
    )

    def clean_file(self) -> Any:
        upload = self.cleaned_data["file"]
        limit = settings.PREFSTUDIO_MAX_UPLOAD_BYTES
        if upload.size == 0:
            raise forms.ValidationError(f"{upload.name} is empty.")
        if upload.size > limit:
            size, most = filesizeformat(upload.size), filesizeformat(limit)
            raise forms.ValidationError(f"{upload.name} is {size}; the upload limit is {most}.")
        return upload


TARGET_HELP = {
    "prompt": "the prompt: text, chat messages, or a conversation shared by the responses",
    "system": "a system prompt, put first in the prompt (blank: none)",
    "response_a": "response A",
    "response_b": "response B",
    "chosen": "the response the data prefers (kept hidden from annotators)",
    "rejected": "the other response",
    "responses": "a list of responses: every pair of them, up to the cap",
    "model_a": "the model of response A (hidden from annotators)",
    "model_b": "the model of response B (hidden from annotators)",
    "chosen_model": "the model of the chosen response (hidden from annotators)",
    "rejected_model": "the model of the rejected response (hidden from annotators)",
    "id": "the record's id",
    "gold": "the known answer for gold items: a, b or tie",
    "label": "the dataset's own preference between A and B (an index such as 0 / 1, a winner such as "
    "model_a, a judge's 1 / 2 / 1.5): hidden from annotators and audited on the Review page",
    "score_a": "a score of response A: with score_b, the higher score is the dataset's preference",
    "score_b": "a score of response B (equal scores: a tie)",
}
# Field names that often hold a target, offered first when the file has no field of the target's name.
_GUESSES = {
    "prompt": ("question", "instruction", "query", "history", "conversation", "context"),
    "chosen": ("preferred", "chosen_response", "response_chosen", "accepted"),
    "rejected": ("dispreferred", "rejected_response", "response_rejected"),
    "responses": ("completions", "outputs", "answers", "candidates"),
    "system": ("system_prompt",),
    "label": ("better_response_id", "choice", "preference", "winner"),
}
# Fields that hold the two sides of a pair, in public layouts: guessed together, so that both come from
# the same pair of names (PKU-SafeRLHF's response_0 / response_1, AlpacaEval's output_1 / output_2, ...).
_SIDE_GUESSES = {
    ("response_a", "response_b"): (
        ("response_0", "response_1"), ("output_1", "output_2"), ("conversation_a", "conversation_b"),
        ("answer_a", "answer_b"), ("completion_a", "completion_b"), ("output_a", "output_b"),
        ("response_1", "response_2"), ("answer_1", "answer_2"), ("ref_a", "ref_b"),
        ("summaries.0.text", "summaries.1.text"),
    ),
    ("model_a", "model_b"): (
        ("generator_1", "generator_2"), ("response_0_source", "response_1_source"), ("model_1", "model_2"),
        ("summaries.0.policy", "summaries.1.policy"),
    ),
}  # fmt: skip
LABEL_VALUE_CHOICES = [("", "—"), ("a", "A is better"), ("b", "B is better"), ("tie", "Tie")]
_OTHER = "label_value_other"


def _value_rows(source: str, values: dict[str, list[str]], mapping: dict[str, Any] | None) -> list[str]:
    """The values of the label field `source` that get a row: those the first records show, then those
    the batch's mapping already gives a meaning for that they do not."""
    shown = values.get(source, [])
    given = label_values_of(mapping) if source and field_sources(mapping).get("label") == source else {}
    return [*shown, *(value for value in given if value not in shown)]


class MappingForm(forms.Form):
    """Which field of the uploaded file feeds each importer field: a row per target, offering the
    file's own field names; and for the label, a row per value the file's label field holds (`values`:
    a few values of each field) or the batch's `mapping` names, saying what it means, and a row for
    another value. A label field chosen anew gets the meanings `guess_label_values` finds."""

    def __init__(self, *args: Any, keys: list[str], values: dict[str, list[str]] | None = None,
                 mapping: dict[str, Any] | None = None, **kwargs: Any) -> None:  # fmt: skip
        super().__init__(*args, **kwargs)
        self.values = values or {}
        choices = [("", "—"), *((key, key) for key in keys)]
        for target in TARGETS:
            self.fields[target] = forms.ChoiceField(
                choices=choices, required=False, label=target, help_text=TARGET_HELP[target]
            )
        source = (self.data if self.is_bound else self.initial).get("label") or ""
        self.label_source = source if source in keys else ""
        self.rows = shown = _value_rows(self.label_source, self.values, mapping)
        if self.is_bound and self.data.get("label_values_for", "") != self.label_source:
            # The value rows posted were for another field (or none): start from the guesses.
            data, guessed = self.data.copy(), guess_label_values(self.label_source, shown)
            rows = {f"label_value_{i}": guessed.get(value, "") for i, value in enumerate(shown)}
            reset = {"label_values_for": self.label_source, _OTHER: "", f"{_OTHER}_means": ""}
            for name, value in {**rows, **reset}.items():
                data[name] = value
            self.data = data
        self.fields["label_values_for"] = forms.CharField(required=False, widget=forms.HiddenInput)
        for i, value in enumerate(shown):
            self.fields[f"label_value_{i}"] = forms.ChoiceField(
                choices=LABEL_VALUE_CHOICES, required=False, label=value
            )
        if self.label_source:
            self.fields[_OTHER] = forms.CharField(
                required=False, max_length=100, label="another value",
                widget=forms.TextInput(attrs={"size": 12, "placeholder": "another value",
                                              "aria-label": "another value of the label"}),
            )  # fmt: skip
            self.fields[f"{_OTHER}_means"] = forms.ChoiceField(
                choices=LABEL_VALUE_CHOICES, required=False,
                widget=forms.Select(attrs={"aria-label": "what the other value means"}),
            )  # fmt: skip

    @property
    def target_fields(self) -> list[forms.BoundField]:
        return [self[target] for target in TARGETS]

    @property
    def value_fields(self) -> list[forms.BoundField]:
        return [self[name] for name in self.fields if name.startswith("label_value_") and _OTHER not in name]

    @staticmethod
    def initial_for(
        keys: list[str], mapping: dict[str, Any], *, guess: bool, values: dict[str, list[str]] | None = None
    ) -> dict[str, str]:
        """The batch's mapping, else each target's own field; with `guess` (no layout fits the file),
        a likely field for the others. The label's value rows: the mapping's label values, else guesses."""
        values, fields = values or {}, field_sources(mapping)
        if fields or not guess:
            initial = {target: fields.get(target, target if target in keys else "") for target in TARGETS}
        else:
            lower = {key.lower(): key for key in keys}
            initial = {}
            for target in TARGETS:
                names = (target, *_GUESSES.get(target, ()))
                initial[target] = next((lower[name] for name in names if name in lower), "")
            for sides, candidates in _SIDE_GUESSES.items():
                found = [(lower[x], lower[y]) for x, y in candidates if x in lower and y in lower]
                if found and not all(initial[side] for side in sides):
                    initial.update(zip(sides, found[0], strict=True))
        source = initial["label"]
        shown = _value_rows(source, values, mapping)
        if fields.get("label") == source and LABEL_VALUES in mapping:
            meanings = label_values_of(mapping)
        else:
            meanings = guess_label_values(source, shown)
        initial["label_values_for"] = source
        initial.update({f"label_value_{i}": meanings.get(value, "") for i, value in enumerate(shown)})
        return initial

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        other, means = data.get(_OTHER, ""), data.get(f"{_OTHER}_means", "")
        if bool(other.strip()) != bool(means):
            self.add_error(_OTHER, "Give another value and what it means, or neither.")
        elif other.strip() and not value_key(other):
            self.add_error(_OTHER, "A label value is a number or a short text.")
        try:
            check_mapping(self.mapping())
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from None
        return data

    def label_values(self) -> dict[str, str]:
        """What each value of the label's field means, as chosen (guesses for values of the field the
        first records do not show are kept)."""
        data = self.cleaned_data
        meanings = {v: m for v, m in known_label_values(self.label_source).items() if v not in self.rows}
        meanings.update({v: m for i, v in enumerate(self.rows) if (m := data.get(f"label_value_{i}"))})
        if (other := value_key(data.get(_OTHER) or "")) and data.get(f"{_OTHER}_means"):
            meanings[other] = data[f"{_OTHER}_means"]
        return meanings

    def mapping(self) -> dict[str, Any]:
        """The targets fed by another field than their own name (TARGET -> SOURCE), the label's even
        when it is its own (a pair reads a label only when mapped), and the label values."""
        data = self.cleaned_data
        fields = {t: s for t in TARGETS if (s := data.get(t)) and (s != t or t in LABEL_TARGETS)}
        values = self.label_values() if fields.get("label") else {}
        return {**fields, LABEL_VALUES: values} if values else fields


POSITION_LABELS = {"left": "A is better", "right": "B is better", "tie": "Tie", "both_bad": "Both bad"}
_KEYS = {"left": "1", "right": "2", "tie": "3", "both_bad": "4"}
POSITION_NAMES = {"left": "A", "right": "B", "tie": "Tie", "both_bad": "Both bad"}
_STRENGTHS = [("slightly", "Slightly"), ("clearly", "Clearly")]
_CRITERION_CHOICES = [("left", "A"), ("right", "B"), ("tie", "Tie")]


class JudgmentForm(forms.Form):
    """The annotator's verdict on one pair, in positions as shown (A = left, B = right)."""

    choice = forms.ChoiceField(
        widget=forms.RadioSelect, error_messages={"required": "Pick which response is better."}
    )
    strength = forms.ChoiceField(required=False, widget=forms.RadioSelect, choices=_STRENGTHS)
    rationale = forms.CharField(
        required=False,
        max_length=5000,
        widget=forms.Textarea(attrs={"rows": 2, "placeholder": "Why? (optional)"}),
    )
    active_seconds = forms.FloatField(required=False, min_value=0, max_value=86400, widget=forms.HiddenInput)

    def __init__(self, *args: Any, project: Project, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.project = project
        self.fields["choice"].choices = [(p, POSITION_LABELS[p]) for p in allowed_positions(project)]
        if not project.use_strength:
            del self.fields["strength"]
        for i, criterion in enumerate(project.criteria):
            self.fields[f"criterion_{i}"] = forms.ChoiceField(
                required=False,
                label=criterion["name"],
                help_text=criterion["question"],
                widget=forms.RadioSelect,
                choices=_CRITERION_CHOICES,
            )

    @property
    def criterion_fields(self) -> list[forms.BoundField]:
        return [self[f"criterion_{i}"] for i in range(len(self.project.criteria))]

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if (
            strength_required(self.project)
            and data.get("choice") in ("left", "right")
            and not data.get("strength")
        ):
            self.add_error("strength", "Say how much better: slightly or clearly.")
        return data

    def criteria_answers(self) -> dict[str, str]:
        return {
            c["name"]: self.cleaned_data[f"criterion_{i}"]
            for i, c in enumerate(self.project.criteria)
            if self.cleaned_data.get(f"criterion_{i}")
        }


@dataclass(frozen=True)
class Option:
    value: str
    label: str
    checked: bool = False
    key: str = ""  # its keyboard shortcut


@dataclass(frozen=True)
class CriterionControl:
    name: str
    question: str
    field: str
    options: list[Option]


@dataclass(frozen=True)
class VerdictControls:
    """What the verdict fields show: options with their checked state, values, errors."""

    choices: list[Option]
    strength: list[Option]
    criteria: list[CriterionControl]
    rationale: str = ""
    strength_required: bool = False
    missing_choice: str = ""  # said when Enter is pressed with no choice
    errors: list[str] = field(default_factory=list)
    rationale_errors: list[str] = field(default_factory=list)


def verdict_controls(project: Project, form: JudgmentForm | None = None) -> VerdictControls:
    """The verdict fields for `project`, filled from `form` (posted data or initial values) if given.

    The workbench shows empty controls with every pair; building them from plain lists instead of
    a fresh form saved a tenth of a judge request.
    """

    def value(name: str) -> Any:
        return form[name].value() if form is not None and name in form.fields else None

    def options(name: str, pairs: list[tuple[str, str]], keys: dict[str, str] | None = None) -> list[Option]:
        current = value(name)
        return [Option(v, label, current == v, (keys or {}).get(v, "")) for v, label in pairs]

    errors = [*form.non_field_errors(), *form.errors.get("choice", [])] if form is not None else []
    errors += form.errors.get("strength", []) if form is not None else []
    return VerdictControls(
        choices=options("choice", [(p, POSITION_LABELS[p]) for p in allowed_positions(project)], _KEYS),
        strength=options("strength", _STRENGTHS) if project.use_strength else [],
        criteria=[
            CriterionControl(
                c["name"], c["question"], f"criterion_{i}", options(f"criterion_{i}", _CRITERION_CHOICES)
            )
            for i, c in enumerate(project.criteria)
        ],
        rationale=value("rationale") or "",
        strength_required=strength_required(project),
        missing_choice="Pick which response is better first: press "
        + ", ".join(f"{_KEYS[p]} for {POSITION_NAMES[p]}" for p in allowed_positions(project))
        + ".",
        errors=errors,
        rationale_errors=list(form.errors.get("rationale", [])) if form is not None else [],
    )


def strength_required(project: Project) -> bool:
    """Whether an A or B choice must say how much better (the project asks for strength, and requires it)."""
    return project.use_strength and project.require_strength


def allowed_positions(project: Project) -> list[str]:
    return (
        ["left", "right"]
        + (["tie"] if project.allow_tie else [])
        + (["both_bad"] if project.allow_both_bad else [])
    )


class SkipForm(forms.Form):
    reason = forms.ChoiceField(choices=Assignment.SkipReason.choices, widget=forms.RadioSelect)


class MemberAddForm(forms.Form):
    username = forms.CharField(max_length=150)
    role = forms.ChoiceField(choices=Membership.Role.choices, initial=Membership.Role.ANNOTATOR)

    def __init__(self, *args: Any, project: Project, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.project = project

    def clean_username(self) -> Any:
        username = self.cleaned_data["username"].strip()
        try:
            user = get_user_model().objects.get(username=username)
        except get_user_model().DoesNotExist:
            raise forms.ValidationError(
                f"No user named '{username}'. Invite them with a link below, or create the account in Admin."
            ) from None
        if Membership.objects.filter(project=self.project, user=user).exists():
            raise forms.ValidationError(f"{username} is already a member; change their role in the list.")
        return user


class InvitationForm(forms.Form):
    """A new invitation link: the role it gives, how many accounts it may make, how long it works."""

    prefix = "invite"  # the project page's member form has a role field too

    role = forms.ChoiceField(choices=Membership.Role.choices, initial=Membership.Role.ANNOTATOR)
    max_uses = forms.IntegerField(
        min_value=1, max_value=1000, initial=1, label="Uses", help_text="How many people may join with it."
    )
    days = forms.TypedChoiceField(
        coerce=int,
        choices=[(1, "1 day"), (7, "7 days"), (30, "30 days")],
        initial=7,
        label="Expires after",
    )

    def __init__(self, *args: Any, roles: list[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["role"].choices = [(v, label) for v, label in Membership.Role.choices if v in roles]


class JoinForm(UserCreationForm):
    """The account someone makes with an invitation: a username and a password that passes Django's
    password validators (settings.AUTH_PASSWORD_VALIDATORS)."""

    class Meta(UserCreationForm.Meta):
        model = get_user_model()
        fields = ("username",)


class MemberChangeForm(forms.ModelForm):
    class Meta:
        model = Membership
        fields = ["role", "active"]


class AdjudicationForm(forms.ModelForm):
    """A lead's final label for a pair: any choice, even one annotators may not pick in this project."""

    label = forms.ChoiceField(
        choices=[
            (Choice.A, "Response A is better"),
            (Choice.B, "Response B is better"),
            (Choice.TIE, "Tie"),
            (Choice.BOTH_BAD, "Both bad"),
        ],  # fmt: skip
        widget=forms.RadioSelect,
        label="Final label",
    )

    class Meta:
        model = Adjudication
        fields = ["label", "note"]
        widgets = {"note": forms.Textarea(attrs={"rows": 3, "placeholder": "Why, for the record"})}


class ExportForm(forms.Form):
    """The consensus rules, the shape and format of an export, posted for the live preview as well."""

    min_judgments = forms.IntegerField(
        min_value=1, max_value=100, label="Minimum judgments", help_text="Counted votes a pair needs."
    )
    # Text, kept as written: "2/3" is exactly 2/3 (a rounded 0.6667 would drop every pair won 2 to 1),
    # and the page and the snapshot show it as the user wrote it.
    min_share = forms.CharField(
        max_length=32, initial="2/3", label="Minimum share",
        widget=forms.TextInput(attrs={"inputmode": "decimal", "size": 8, "autocomplete": "off"}),
        help_text="Share of the counted votes the winning label needs (majority): 2/3, 0.75 or 75%.",
    )  # fmt: skip
    method = forms.ChoiceField(
        choices=[("majority", "Majority vote"), ("dawid-skene", "Dawid–Skene posterior")],
        initial="majority",
        help_text="Dawid–Skene weighs each annotator by their estimated reliability.",
    )
    min_posterior = forms.FloatField(
        min_value=0, max_value=1, initial=0.8, label="Minimum posterior", help_text="Dawid–Skene only."
    )
    keep_ties = forms.BooleanField(required=False, label="Keep ties (unpaired shapes give no rows for them)")
    keep_both_bad = forms.BooleanField(
        required=False, label="Keep both-bad pairs (unpaired shapes: two undesirable rows)"
    )
    adjudication_overrides = forms.BooleanField(
        required=False, initial=True, label="Adjudication overrides votes"
    )
    drop_gold = forms.BooleanField(required=False, label="Leave out gold pairs")
    shape = forms.ChoiceField(choices=ExportSnapshot.Shape.choices, initial=ExportSnapshot.Shape.STANDARD)
    format = forms.ChoiceField(choices=ExportSnapshot.Format.choices, initial=ExportSnapshot.Format.JSONL)
    eval_fraction = forms.FloatField(
        min_value=0, max_value=0.5, initial=0.05, label="Eval fraction",
        help_text="Held out by a stable hash of the pair id, as a separate file.",
    )  # fmt: skip
    include_metadata = forms.BooleanField(
        required=False, initial=True, label="Include pair metadata in meta (not in the hosted shape)"
    )
    judge = forms.ModelChoiceField(
        queryset=None, required=False, empty_label="People only", label="Unsettled pairs",
        help_text="Let an AI judge label the pairs people left without a consensus (too few votes, a "
        "split vote), if it agrees well enough with people where they did reach one. Its rows say "
        "source: judge in meta.",
    )  # fmt: skip
    judge_min_kappa = forms.FloatField(
        min_value=-1, max_value=1, initial=0.6, required=False, label="Judge's κ with people at least",
        help_text="Cohen's κ between the judge and people's consensus on the pairs both labelled.",
    )  # fmt: skip
    judge_min_shared = forms.IntegerField(
        min_value=1,
        initial=50,
        required=False,
        label="…on at least this many pairs",
        help_text="Pairs both labelled.",
    )
    judge_min_probability = forms.FloatField(
        min_value=0, max_value=1, initial=0.8, required=False, label="Judge's probability at least",
        help_text="A pair is filled only where the judge's order-averaged probability of its label is at "
        "least this.",
    )  # fmt: skip

    def __init__(self, *args: Any, project: Project, **kwargs: Any) -> None:
        from django.apps import apps

        super().__init__(*args, **kwargs)
        self.fields["min_judgments"].initial = project.overlap
        judges = apps.get_model("evaluation", "Judge").objects.filter(project=project, state="succeeded")
        self.fields["judge"].queryset = judges
        self.fields["judge"].label_from_instance = lambda j: (
            f"AI judge “{j.name}” ({j.model_ref}, {j.done} pairs)"
        )
        self.judge_fill: Any = None

    def groups(self) -> dict[str, list[forms.BoundField]]:
        """The fields as the page lays them out."""
        names = {
            "numbers": ["method", "min_judgments", "min_share", "min_posterior"],
            "switches": ["keep_ties", "keep_both_bad", "adjudication_overrides", "drop_gold"],
            "files": ["shape", "format", "eval_fraction"],
            "file_switches": ["include_metadata"],
            "judge": ["judge", "judge_min_kappa", "judge_min_shared", "judge_min_probability"],
        }
        return {group: [self[name] for name in fields] for group, fields in names.items()}

    @classmethod
    def initial_data(cls, project: Project) -> dict[str, Any]:
        """The defaults as submitted data (checkboxes only when on)."""
        form = cls(project=project)
        data = {
            name: field.initial for name, field in form.fields.items() if field.initial not in (None, False)
        }
        return {k: ("on" if v is True else v) for k, v in data.items()}

    def clean(self) -> dict[str, Any]:
        """With a judge: the export rule letting it fill unsettled pairs (`judge_fill`), refused with the
        judge's numbers when it falls short of the κ bar."""
        data = super().clean()
        judge = data.get("judge")
        numbers = [
            data.get(name) for name in ("judge_min_kappa", "judge_min_shared", "judge_min_probability")
        ]
        if judge is not None and None in numbers:
            self.add_error("judge", "Give the judge's κ, shared pairs and probability thresholds.")
        elif judge is not None:
            from evaluation.calibration import export_fill

            try:
                self.judge_fill = export_fill(
                    judge, min_kappa=numbers[0], min_shared=numbers[1], min_probability=numbers[2]
                )
            except ValueError as exc:
                self.add_error("judge", str(exc).removeprefix("judge: "))
        return data

    def clean_min_share(self) -> str:
        text = self.cleaned_data["min_share"].strip()
        try:
            parse_share(text)
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from None
        return text

    def rules(self) -> dict[str, Any]:
        """ConsensusRules fields from the cleaned data."""
        data = self.cleaned_data
        return {
            "min_judgments": data["min_judgments"],
            "min_share": parse_share(data["min_share"]),
            "drop_ties": not data["keep_ties"],
            "drop_both_bad": not data["keep_both_bad"],
            "adjudication_overrides": data["adjudication_overrides"],
            "drop_gold": data["drop_gold"],
            "method": data["method"],
            "min_posterior": data["min_posterior"],
        }
