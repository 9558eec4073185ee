"""Measures a Redactor against a labelled corpus (used by the tests and bench)."""

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path


@dataclass
class CorpusScore:
    expected: int  # labelled values in the positive texts
    found: int  # of those, redacted with the right kind
    negatives: int  # texts with nothing to redact
    false_positive_texts: int  # negatives in which something was redacted
    misses: list

    @property
    def recall(self) -> float:
        return self.found / self.expected if self.expected else 1.0

    @property
    def false_positive_rate(self) -> float:
        return self.false_positive_texts / self.negatives if self.negatives else 0.0


def score(redactor, path: Path) -> CorpusScore:
    expected = found = negatives = fp = 0
    misses = []
    for line in path.read_text().splitlines():
        case = json.loads(line)
        counts = Counter()
        redacted = redactor.redact(case["text"], counts)
        if case["kinds"]:
            wanted = Counter(case["kinds"])
            expected += sum(wanted.values())
            hit = sum(min(n, counts[k]) for k, n in wanted.items())
            found += hit
            if hit < sum(wanted.values()):
                misses.append((case["text"], dict(counts), redacted))
        else:
            negatives += 1
            if counts:
                fp += 1
                misses.append((case["text"], dict(counts), redacted))
    return CorpusScore(expected, found, negatives, fp, misses)
