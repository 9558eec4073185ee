"""Secrets found by a maintained rule set: gitleaks' default rules, vendored as
`rules/gitleaks.toml` (gitleaks v8.30.1, MIT licence in `rules/gitleaks-LICENSE`; to
update, copy config/gitleaks.toml of a newer release over it and run the corpus test).

gitleaks' patterns are Go regular expressions, which RE2 runs as they are, in linear
time. Each rule names keywords; one RE2 pass over a text finds which keywords it holds,
and only their rules run, so a text without any costs that one pass. A rule's secret
is its `secretGroup`, else its first non-empty group, else the whole match; matches
below the rule's entropy or holding one of its stopwords are left alone, as gitleaks
does.
"""

import math
import tomllib
from collections import Counter
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import re2

RULES_PATH = Path(__file__).parent / "rules" / "gitleaks.toml"
# Any "key = <high-entropy string>": written for source code, where it is rare; in
# prompts and tool results it takes ids, hashes and base64 for keys.
SKIPPED = frozenset({"generic-api-key"})
KINDS = {"private-key": "PRIVATE_KEY", "jwt": "JWT", "jwt-base64": "JWT"}


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    regex: object  # re2 pattern
    group: int
    entropy: float | None
    stopwords: tuple[str, ...]
    kind: str


def shannon_entropy(text: str) -> float:
    counts, n = Counter(text), len(text)
    return -sum(c / n * math.log2(c / n) for c in counts.values()) if n else 0.0


class SecretRules:
    def __init__(self, path: Path = RULES_PATH):
        config = tomllib.loads(path.read_text())
        self.rules: list[Rule] = []
        self.by_keyword: dict[str, list[int]] = {}
        options = re2.Options()
        options.max_mem = 64 << 20  # a few rules are large alternations
        for raw in config["rules"]:
            if raw["id"] in SKIPPED or "regex" not in raw or not raw.get("keywords"):
                continue
            stopwords = tuple(
                word.lower()
                for allow in raw.get("allowlists", [])
                for word in allow.get("stopwords", [])
            )
            self.rules.append(
                Rule(
                    id=raw["id"],
                    regex=re2.compile(raw["regex"], options),
                    group=raw.get("secretGroup", 0),
                    entropy=raw.get("entropy"),
                    stopwords=stopwords,
                    kind=KINDS.get(raw["id"], "API_KEY"),
                )
            )
            for keyword in raw["keywords"]:
                self.by_keyword.setdefault(keyword.lower(), []).append(len(self.rules) - 1)
        # Which keywords a text holds, anywhere (overlapping ones too), in one pass that
        # returns their indexes: prose holds a few keywords ("s.", "ey") many times, and
        # a match object for each occurrence had cost five times the pass itself.
        keyword_options = re2.Options()
        keyword_options.max_mem = options.max_mem
        keyword_options.case_sensitive = False
        self.keywords = re2.Set.SearchSet(keyword_options)
        self.keyword_rules: list[list[int]] = []
        for word, rules in self.by_keyword.items():
            self.keywords.Add(re2.escape(word))
            self.keyword_rules.append(rules)
        self.keywords.Compile()

    def find(self, text: str) -> list[tuple[int, int, str, str]]:
        """(start, end, kind, secret) of each secret in text, in no particular order."""
        present = self.keywords.Match(text)
        if not present:
            return []
        chosen = sorted({i for word in present for i in self.keyword_rules[word]})
        found = []
        for rule in (self.rules[i] for i in chosen):
            for match in rule.regex.finditer(text):
                group = rule.group
                if not group:
                    group = next(
                        (g for g in range(1, len(match.groups()) + 1) if match.group(g)), 0
                    )
                secret = match.group(group)
                if not secret:
                    continue
                if rule.entropy and shannon_entropy(secret) < rule.entropy:
                    continue
                if rule.stopwords and any(w in secret.lower() for w in rule.stopwords):
                    continue
                start, end = match.span(group)
                found.append((start, end, rule.kind, secret))
        return found


@cache
def secret_rules() -> SecretRules:
    """Loaded once per process (about 220 rules)."""
    return SecretRules()
