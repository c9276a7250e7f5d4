"""Citation precision at sentence level: does each cited passage support the sentence that cites it?

The judge is medrag.agent.verify.SupportVerifier without an embedder, so the score is
lexical and deterministic: 1.0 when the sentence is quoted from the passage, else the
share of the sentence's content words (stopwords dropped, light stemming) that the
passage contains. A citation supports its sentence when that score is at least
``SUPPORT_THRESHOLD`` (0.5: at least half of what the sentence says is in the passage,
the verifier's own default for keeping a sentence).

This is independent of the agent's own ``sentence.support`` (the agent grades itself
with its embedder; here every run is graded by the same fixed judge).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

SUPPORT_THRESHOLD = 0.5


def sentence_citation_scores(
    answer: Any, passage_text: Callable[[Any], str | None], *, threshold: float = SUPPORT_THRESHOLD
) -> dict[str, float | None]:
    """Per answer:

    - ``citation_precision``: share of (sentence, cited passage) pairs where that passage
      alone supports the sentence;
    - ``sentence_support``: share of citing sentences whose cited passages together support it.

    Both are None when no sentence cites anything (an abstention): there is nothing to judge.
    Citations whose passage text cannot be found (e.g. a graph fact) are left out.
    """
    from medrag.agent.verify import SupportVerifier

    judge = SupportVerifier(None, min_support=threshold)
    citations = list(getattr(answer, "citations", []) or [])
    pairs: list[bool] = []
    sentences: list[bool] = []
    for sentence in getattr(answer, "sentences", []) or []:
        texts = []
        for number in getattr(sentence, "citations", []) or []:
            if not 1 <= number <= len(citations):
                continue
            text = passage_text(citations[number - 1])
            if text:
                texts.append(text)
                pairs.append(judge.support(sentence.text, [text]) >= threshold)
        if texts:
            sentences.append(judge.support(sentence.text, texts) >= threshold)
    return {
        "citation_precision": sum(pairs) / len(pairs) if pairs else None,
        "sentence_support": sum(sentences) / len(sentences) if sentences else None,
    }
