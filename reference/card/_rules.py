"""What a model card must say, declared once as data (section 24.5 of the release chapter).

Every table here is read by ``card.py``; nothing there spells a heading. A section or item is
recognised by its *synonyms*: ``exact`` titles (compared whole, after ``normalize_title``) and
``phrases`` found inside a title on word boundaries, plural allowed (CJK phrases as substrings).
Items are also recognised by *keywords* (regular expressions, case-insensitive) in the text of
their section, so a card that states its out-of-scope uses in prose is not failed for lacking
the heading.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Final

__all__ = [
    "Synonyms",
    "ItemKind",
    "Scope",
    "Item",
    "Section",
    "Fact",
    "Placeholder",
    "Topic",
    "FACTS",
    "SECTIONS",
    "SECTION_KEYS",
    "PLACEHOLDERS",
    "PLACEHOLDER_PATTERN",
    "EMPTY_VALUES",
    "LIMITATION_TOPICS",
    "BIBTEX_INFO_STRINGS",
]

_CJK: Final = re.compile(r"[\u3400-\u9fff]")


@dataclass(frozen=True)
class Synonyms:
    """Titles that name one thing: whole titles (``exact``) and phrases inside a title."""

    exact: frozenset[str] = frozenset()
    phrases: tuple[str, ...] = ()

    @cached_property
    def _patterns(self) -> tuple[re.Pattern[str], ...]:
        out = []
        for p in self.phrases:
            if _CJK.search(p):
                out.append(re.compile(re.escape(p)))
            else:
                out.append(re.compile(rf"(?<!\w){re.escape(p)}(?:s|es)?(?!\w)"))
        return tuple(out)

    def match(self, variants: Iterable[str]) -> bool:
        """Whether any normalized variant of a title names this thing."""
        for v in variants:
            if v in self.exact or any(p.search(v) for p in self._patterns):
                return True
        return False

    def __or__(self, other: Synonyms) -> Synonyms:
        return Synonyms(self.exact | other.exact, self.phrases + other.phrases)


def syn(*phrases: str, exact: Iterable[str] = ()) -> Synonyms:
    return Synonyms(frozenset(exact) | frozenset(p for p in phrases), tuple(phrases))


@dataclass(frozen=True)
class Fact:
    """A value the card states about the release (its version, license, size...)."""

    key: str
    title: str
    labels: Synonyms
    front_matter: tuple[str, ...]


class Scope(enum.Enum):
    """Where an item's keywords are looked for."""

    SECTION = "section"  # the text of its section
    CARD = "card"  # the whole card
    TITLE = "title"  # the title, the front matter name and the opening of its section


class ItemKind(enum.Enum):
    TEXT = "text"  # prose under a heading or label, or keywords in the section
    TABLE = "table"  # a Markdown or HTML table (or the Hub's model-index results)
    BIBTEX = "bibtex"  # a BibTeX entry that parses


@dataclass(frozen=True)
class Item:
    """Something a section must state, and how to tell that it does."""

    key: str
    title: str
    labels: Synonyms
    keywords: tuple[str, ...]
    fix: str
    kind: ItemKind = ItemKind.TEXT
    front_matter: tuple[str, ...] = ()
    scope: Scope = Scope.SECTION

    @cached_property
    def keyword_pattern(self) -> re.Pattern[str] | None:
        return re.compile("|".join(f"(?:{k})" for k in self.keywords), re.I) if self.keywords else None


@dataclass(frozen=True)
class Section:
    """A required section of the card."""

    key: str
    title: str
    heading: str  # what to add when it is missing
    synonyms: Synonyms
    fix: str
    items: tuple[Item, ...] = field(default=())
    items_suffice: bool = False  # present without a heading when every item is stated elsewhere

    @property
    def cites(self) -> bool:
        """Whether this section holds the BibTeX (a fenced bibtex block anywhere then counts as it)."""
        return any(i.kind is ItemKind.BIBTEX for i in self.items)


@dataclass(frozen=True)
class Placeholder:
    """Text that stands in for content someone forgot to write."""

    name: str
    pattern: re.Pattern[str]


@dataclass(frozen=True)
class Topic:
    """A limitation the chapter requires the card to discuss."""

    key: str
    title: str
    keywords: re.Pattern[str]
    fix: str


def _kw(*words: str) -> re.Pattern[str]:
    return re.compile("|".join(f"(?:{w})" for w in words), re.I)


FACTS: Final[dict[str, Fact]] = {
    f.key: f
    for f in (
        Fact(
            "name",
            "model name",
            syn("model name", "模型名称", exact=("name", "model id", "名称")),
            ("model_name", "name", "pretty_name", "model_id"),
        ),
        Fact("version", "version", syn("version", "版本"), ("version", "model_version")),
        Fact(
            "release_date",
            "release date",
            syn(
                "release date",
                "date of release",
                "model date",
                "released",
                "发布日期",
                "发布时间",
                exact=("date", "dates", "release", "日期", "发布"),
            ),
            ("release_date", "date", "released"),
        ),
        Fact(
            "model_type",
            "model type",
            syn("model type", "type of model", "model architecture", "architecture", "模型类型", "模型架构", "架构"),
            ("model_type",),
        ),
        Fact(
            "license",
            "license",
            syn("license", "licence", "licensing", "terms of use", "许可证", "许可", "开源协议"),
            ("license",),
        ),
        Fact(
            "contact",
            "contact",
            syn(
                "contact",
                "point of contact",
                "reporting issue",
                "report issue",
                "feedback",
                "where to send questions",
                "questions or comments",
                "maintainer",
                "联系",
                "反馈",
            ),
            ("contact",),
        ),
        Fact(
            "parameters",
            "parameter count",
            syn(
                "parameter count",
                "number of parameters",
                "参数量",
                "参数规模",
                exact=("parameters", "params", "model size", "size", "参数"),
            ),
            ("parameters", "params", "num_parameters", "parameter_count"),
        ),
        Fact(
            "context_length",
            "context length",
            syn(
                "context length",
                "context window",
                "context size",
                "max sequence length",
                "maximum sequence length",
                "sequence length",
                "max position embeddings",
                "上下文长度",
                "上下文窗口",
                "最大长度",
                "序列长度",
            ),
            ("context_length", "context_window", "max_position_embeddings", "max_seq_len", "max_sequence_length"),
        ),
    )
}

_VERSIONED_NAME: Final = r"\bv\d+(?:\.\d+)*\b|\b\d+\.\d+(?:\.\d+)?\b|\b[A-Z][A-Za-z]+[- ]\d+(?:\.\d+)*(?![\w.])"

_BASIC_ITEMS: Final = (
    Item(
        "name_version",
        "name and version",
        FACTS["version"].labels,
        (_VERSIONED_NAME,),
        "state the model's name and version (e.g. '- **Name and version:** VLA-Driver-10B-MoE v1.0.0')",
        front_matter=FACTS["version"].front_matter,
        scope=Scope.TITLE,
    ),
    Item(
        "release_date",
        "release date",
        FACTS["release_date"].labels,
        (r"\breleased? (?:on|in)\b", r"\b\d{4}-\d{2}-\d{2}\b", "发布于"),
        "state the release date as YYYY-MM-DD (e.g. '- **Release date:** 2024-10-26')",
        front_matter=FACTS["release_date"].front_matter,
    ),
    Item(
        "model_type",
        "model type",
        FACTS["model_type"].labels,
        (
            r"\btransformer",
            r"\bauto-?regressive",
            r"\bdecoder",
            r"\bencoder",
            r"\blanguage model",
            r"\bmixture[- ]of[- ]experts",
            r"\bdiffusion",
            r"\bvision[- ]language",
            r"\bis an? [^.\n]{0,80}\bmodel\b",  # "X is a 300M parameter open embedding model"
            "自回归",
        ),
        "state the model type (e.g. '- **Model type:** multimodal autoregressive Transformer')",
        front_matter=FACTS["model_type"].front_matter,
    ),
    Item(
        "license",
        "license",
        FACTS["license"].labels,
        (r"\blicen[cs]ed under\b", "许可证"),
        "state the license as an SPDX identifier (front matter 'license: apache-2.0' and '- **License:** Apache-2.0')",
        front_matter=FACTS["license"].front_matter,
        scope=Scope.CARD,
    ),
    Item(
        "contact",
        "contact",
        FACTS["contact"].labels,
        (
            r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+",
            r"\bcontact\b",
            r"\bquestions or comments\b",
            r"github\.com/[^)\s]+/issues",
            "联系",
        ),
        "give a contact for questions and issues (e.g. '- **Contact:** ai-safety@example.org')",
        front_matter=FACTS["contact"].front_matter,
        scope=Scope.CARD,
    ),
)

SECTIONS: Final[tuple[Section, ...]] = (
    Section(
        "basic_information",
        "Basic information",
        "## Model Details",
        syn(
            "model details",
            "model information",
            "model description",
            "model summary",
            "model overview",
            "basic information",
            "基本信息",
            "模型信息",
            "模型详情",
            "模型介绍",
            "模型简介",
            "模型概述",
            exact=("overview", "about", "introduction", "简介", "概述", "介绍"),
        ),
        "add a '## Model Details' section with name and version, release date, model type, license and contact",
        _BASIC_ITEMS,
        items_suffice=True,
    ),
    Section(
        "intended_use",
        "Intended use",
        "## Intended Use",
        syn(
            "intended use",
            "intended usage",
            "model use",
            "use case",
            "uses",
            "usage",
            "预期用途",
            "模型用途",
            "用途",
            "使用场景",
            "适用场景",
            "应用场景",
            "适用范围",
            "使用范围",
            "预期使用",
            exact=("use",),
        ),
        "add an '## Intended Use' section with direct use, downstream use and out-of-scope use",
        (
            Item(
                "direct_use",
                "direct use",
                syn(
                    "direct use",
                    "intended use case",
                    "primary intended use",
                    "primary use",
                    "直接用途",
                    "直接使用",
                    "主要用途",
                ),
                (
                    r"\bdirect use",
                    r"\bintended (?:for|to be used)\b",
                    r"\bcan be used (?:for|as|to)\b",
                    r"\bdesigned (?:for|to)\b",
                    r"\bmeant for\b",
                    r"\bprimary (?:intended )?use",
                    r"\bused (?:for|as|to)\b",
                    "直接用途",
                    "用于",
                ),
                "add a '### Direct Use' subsection: what the model is for as shipped",
            ),
            Item(
                "downstream_use",
                "downstream use",
                syn(
                    "downstream use", "downstream", "fine tuning", "finetuning", "下游用途", "下游使用", "下游", "微调"
                ),
                (
                    r"\bdownstream",
                    r"\bfine-?tun",
                    r"\badapt",
                    r"\bbuild(?:ing)? (?:on|upon)\b",
                    r"\bfoundation (?:model|for)\b",
                    r"\bbase model",
                    "下游",
                    "微调",
                ),
                "add a '### Downstream Use' subsection: what it may be fine-tuned or built into",
            ),
            Item(
                "out_of_scope",
                "out-of-scope use",
                syn(
                    "out of scope",
                    "misuse",
                    "prohibited use",
                    "restricted use",
                    "uses to avoid",
                    "禁止使用",
                    "不适用",
                    "超出范围",
                    "禁止",
                    "限制使用",
                ),
                (
                    r"\bout[- ]of[- ]scope",
                    r"\b(?:should|must|may) not be used",
                    r"\bnot (?:be )?(?:intended|suitable|designed|meant)\b",
                    r"\bprohibited",
                    r"\bmisuse",
                    r"\bmalicious",
                    r"\bdo not use",
                    "禁止",
                    "严禁",
                    "不得",
                    "不应",
                    "不适用",
                ),
                "add a '### Out-of-Scope Use' subsection: uses the model must not be put to",
            ),
        ),
    ),
    Section(
        "training_data",
        "Training data",
        "## Training Data",
        syn(
            "training data",
            "training dataset",
            "pretraining data",
            "pre training data",
            "training corpus",
            "pretraining corpus",
            "data source",
            "训练数据",
            "预训练数据",
            "训练语料",
            exact=("data", "datasets", "dataset", "training", "training details", "model data", "数据", "训练"),
        ),
        "add a '## Training Data' section with sources and composition, and data governance",
        (
            Item(
                "sources",
                "sources and composition",
                syn(
                    "source",
                    "composition",
                    "data mix",
                    "data mixture",
                    "training dataset",
                    "数据来源",
                    "来源",
                    "构成",
                    "数据配比",
                    exact=("overview",),
                ),
                (
                    r"\bsources?\b",
                    r"\bcomposition",
                    r"\bmix(?:ture)?\b",
                    r"\bcorpus",
                    r"\btokens\b",
                    r"\bdatasets?\b",
                    r"\bcollected",
                    r"\bcrawl",
                    "来源",
                    "构成",
                    "配比",
                    "语料",
                ),
                "add a '### Sources and Composition' subsection: where the data comes from and in what proportions",
            ),
            Item(
                "governance",
                "data governance",
                syn(
                    "governance",
                    "data preprocessing",
                    "preprocessing",
                    "data cleaning",
                    "data filtering",
                    "filtering",
                    "privacy",
                    "数据治理",
                    "数据清洗",
                    "治理",
                    "隐私",
                ),
                (
                    r"\bgovernance",
                    r"\bpii\b",
                    r"\bpersonal",
                    r"\bprivacy",
                    r"\bfilter",
                    r"\bdedup",
                    r"\bclean",
                    r"\bconsent",
                    r"\bopt[- ]?out",
                    r"robots\.txt",
                    r"\btoxic",
                    r"\bcopyright",
                    r"\blicen[cs]",
                    r"\buser data",
                    r"\banonymi",
                    "治理",
                    "清洗",
                    "隐私",
                    "过滤",
                    "去重",
                    "合规",
                    "版权",
                    "个人信息",
                ),
                "add a '### Data Governance' subsection: PII removal, filtering, licensing and consent",
            ),
        ),
    ),
    Section(
        "evaluation",
        "Evaluation",
        "## Evaluation",
        syn(
            "evaluation",
            "benchmark",
            "eval result",
            "performance",
            "性能评测",
            "评测",
            "评估",
            "测评",
            "基准测试",
            exact=("results", "metrics", "性能", "结果"),
        ),
        "add an '## Evaluation' section with a results table",
        (
            Item(
                "results_table",
                "results table",
                syn(),
                (),
                "add a results table (| Benchmark | Metric | Score |) to the evaluation section",
                kind=ItemKind.TABLE,
                front_matter=("model-index",),
            ),
        ),
    ),
    Section(
        "limitations",
        "Limitations",
        "## Limitations",
        syn("limitation", "caveat", "shortcoming", "局限", exact=("限制", "不足")),
        "add a '## Limitations' section (factuality, robustness, bias, causal reasoning)",
    ),
    Section(
        "ethical_considerations",
        "Ethical considerations",
        "## Ethical Considerations",
        syn(
            "ethical",
            "ethics",
            "risk",
            "bias",
            "safety",
            "responsible ai",
            "responsible use",
            "responsibility",
            "harm",
            "societal impact",
            "social impact",
            "fairness",
            "伦理",
            "安全",
            "风险",
            "偏见",
        ),
        "add an '## Ethical Considerations' section with risks and their mitigations",
        (
            Item(
                "risks",
                "risks",
                syn("risk", "risk assessment", "harm", "风险评估", "风险"),
                (
                    r"\brisk",
                    r"\bmisuse",
                    r"\bharm",
                    r"\babuse",
                    r"\bmalicious",
                    r"\bdangerous",
                    r"\bunsafe",
                    r"\bobjectionable",
                    r"\btoxic",
                    "风险",
                    "滥用",
                    "危害",
                    "恶意",
                ),
                "add a '### Risks' subsection: how the model could cause harm or be misused",
            ),
            Item(
                "mitigations",
                "mitigations",
                syn("mitigation", "recommendation", "safeguard", "风险缓释", "缓释", "缓解", "应对措施"),
                (
                    r"\bmitigat",
                    r"\bsafeguard",
                    r"\bfilter",
                    r"\brecommend",
                    r"\bsafety (?:testing|tuning|measures|guidelines|filter)",
                    r"\bred[- ]team",
                    r"\balign",
                    r"\bguard",
                    r"\bresponsible use",
                    "缓释",
                    "缓解",
                    "过滤",
                    "措施",
                    "对齐",
                ),
                "add a '### Mitigations' subsection: what was done, and what users must do, to reduce the risks",
            ),
        ),
    ),
    Section(
        "citation",
        "Citation",
        "## Citation",
        syn("citation", "cite", "citing", "bibtex", "引用", exact=("reference", "references")),
        "add a '## Citation' section with a BibTeX entry",
        (
            Item(
                "bibtex",
                "BibTeX entry",
                syn(),
                (),
                "add a BibTeX entry in a ```bibtex block: @misc{key, title = {...}, author = {...}, year = {...}}",
                kind=ItemKind.BIBTEX,
            ),
        ),
    ),
)

SECTION_KEYS: Final[tuple[str, ...]] = tuple(s.key for s in SECTIONS)

# Fenced-code info strings that hold BibTeX (a citation section may be nothing but such a block).
BIBTEX_INFO_STRINGS: Final = frozenset({"bibtex", "bib", "biblatex", "latex", "tex"})

PLACEHOLDERS: Final[tuple[Placeholder, ...]] = tuple(
    Placeholder(name, re.compile(pattern, flags))
    for name, pattern, flags in (
        # the Hub template's default sentences, before the generic "more information needed"
        (
            "Hub template boilerplate",
            r"Users \(both direct and downstream\) should be made aware of the risks, biases and limitations of the "
            r"model\.|More information needed for further recommendations\.?|This model card has been automatically "
            r"generated\.?|This is the model card of a 🤗 transformers model that has been pushed on the Hub\.?",
            re.I,
        ),
        ("[More Information Needed]", r"\[\s*more information needed\s*\]|\bmore information needed\b", re.I),
        # the marker and the instruction after it on its line ("TODO: fill in after review")
        ("TODO/TBD", r"\b(?:TODO|TBD|TBA|FIXME|XXX+)\b(?:\s*[:\-–—]\s*[^\n|]*)?", 0),
        ("to be determined", r"\bto be (?:determined|added|announced|filled(?: in)?|completed|written)\b", re.I),
        (
            "template domain",
            r"\[?[\w.+-]*@?[\w.-]*\byour[-_]?(?:company|organi[sz]ation|org|domain)(?:\.[a-z]{2,})*\b\]?",
            re.I,
        ),
        ("example domain", r"\[?[\w.+-]*@?[\w.-]*\bexample\.(?:com|org|net)\b[\w/.-]*\]?", re.I),
        ("bracketed instruction", r"\[(?:your|insert|add|fill in|enter|placeholder)\b[^\]]*\]", re.I),
        ("lorem ipsum", r"\blorem ipsum\b", re.I),
        ("template title", r"\bModel Card for Model ID\b", 0),
        ("待补充", r"待补充|待定|待填写|待完善|待更新|此处填写|暂无信息", 0),
    )
)

# All of them at once, in table order (for removing them from text).
PLACEHOLDER_PATTERN: Final = re.compile(
    "|".join(f"(?{'i' if p.pattern.flags & re.I else ''}:{p.pattern.pattern})" for p in PLACEHOLDERS)
)

# A whole field or section that says only this says nothing.
EMPTY_VALUES: Final = frozenset({"n/a", "na", "none", "-", "—", "--", "?", "...", "…", "null", "无", "暂无", "空"})

LIMITATION_TOPICS: Final[tuple[Topic, ...]] = (
    Topic(
        "factuality",
        "factuality",
        _kw(
            r"\bfactual", r"\bhallucinat", r"\binaccura", r"\bincorrect", r"\bfalse\b", r"\bmade[- ]up", "事实", "幻觉"
        ),
        "state that outputs may be factually wrong (hallucinated descriptions or wrong action commands)",
    ),
    Topic(
        "robustness",
        "robustness",
        _kw(
            r"\brobust",
            r"\brare\b",
            r"\bedge[- ]cases?",
            r"\bout[- ]of[- ]distribution",
            r"\badversarial",
            r"\bunseen\b",
            r"\bdistribution shift",
            r"\bextreme",
            r"\bcorner[- ]cases?",
            "鲁棒",
            "罕见",
            "极端",
        ),
        "state how performance degrades in rare scenes (extreme weather, atypical accidents, unusual signs)",
    ),
    Topic(
        "bias",
        "bias",
        _kw(r"\bbias", r"\bstereotyp", r"\bfairness", r"\bunderrepresent", r"\bdiscriminat", "偏见", "偏差"),
        "state the biases of the training data (regions, traffic rules, driving cultures)",
    ),
    Topic(
        "causal_reasoning",
        "causal reasoning",
        _kw(r"\bcausal", r"\bcausality", r"\bcommon[- ]?sense", r"\blong[- ]horizon", r"\bcorrelation", "因果"),
        "state that the model learns correlations rather than causes (long-horizon interactions)",
    ),
)
