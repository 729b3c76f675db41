"""VCR token lists -> wordpieces with object tags: object references become names, then the original truncation rules.

A VCR token is a word (str) or a list of 0-based object indices. A list becomes the objects' words joined by "and";
a person is called `GENDER_NEUTRAL_NAMES[index % 13]` (deterministic, unlike the original's shared counter), any
other object its category name. Every wordpiece of an object's word is tagged with the object's box position
(index + 1 when the whole-image box is box 0); plain words and the joining "and" get the non-object tag.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

GENDER_NEUTRAL_NAMES = (
    "Casey", "Riley", "Jessie", "Jackie", "Avery", "Jaime", "Peyton", "Kerry", "Jody", "Kendall", "Frankie", "Pat",
    "Quinn",
)

# (wordpiece, tag) pairs; a piece and its tag travel together through truncation.
TaggedPieces = list[tuple[str, int]]
VCRToken = str | Sequence[int]


def object_word(index: int, objects: Sequence[str]) -> str:
    """The word that stands for object `index`: a gender-neutral name for a person, else its category name."""
    if objects[index] == "person":
        return GENDER_NEUTRAL_NAMES[index % len(GENDER_NEUTRAL_NAMES)]
    return objects[index]


def object_indices_in(tokens: Sequence[VCRToken]) -> list[int]:
    """All object indices referenced by a token list, in order of mention (with repeats)."""
    return [int(i) for token in tokens if not isinstance(token, str) for i in token]


def expand_tokens(
    tokens: Sequence[VCRToken],
    objects: Sequence[str],
    tokenize: Callable[[str], list[str]],
    object_tag: Callable[[int], int],
    non_object_tag: int,
) -> TaggedPieces:
    """Turn a VCR token list into (wordpiece, tag) pairs.

    `object_tag(i)` gives the box position of object i (i + 1 with the image box prepended); `tokenize` splits a
    word into wordpieces (lower-casing and punctuation splitting included).
    """
    pieces: TaggedPieces = []
    for token in tokens:
        if isinstance(token, str):
            pieces += [(piece, non_object_tag) for piece in tokenize(token)]
            continue
        for position, index in enumerate(token):
            if position > 0:
                pieces += [(piece, non_object_tag) for piece in tokenize("and")]
            tag = object_tag(int(index))
            pieces += [(piece, tag) for piece in tokenize(object_word(int(index), objects))]
    return pieces


def truncate_pair(first: TaggedPieces, second: TaggedPieces, max_len: int) -> tuple[TaggedPieces, TaggedPieces]:
    """Q2A rule: pop from the end of the longer list (the second on ties) until the two fit in max_len.

    Works on copies: the caller's lists (e.g. a question shared by 4 answers) are never changed.
    """
    first, second = list(first), list(second)
    while len(first) + len(second) > max_len:
        if len(first) > len(second):
            first.pop()
        else:
            second.pop()
    return first, second


def truncate_triple(
    question: TaggedPieces, answer: TaggedPieces, rationale: TaggedPieces, max_len: int
) -> tuple[TaggedPieces, TaggedPieces, TaggedPieces]:
    """QA2R rule: pop the rationale if it is longer than question + answer, else the question while it keeps at
    least one piece, else the answer; until all three fit in max_len. Works on copies."""
    question, answer, rationale = list(question), list(answer), list(rationale)
    while len(question) + len(answer) + len(rationale) > max_len:
        if len(rationale) > len(question) + len(answer):
            rationale.pop()
        elif len(question) > 1:
            question.pop()
        else:
            answer.pop()
    return question, answer, rationale


def relevant_object_order(token_lists: Sequence[Sequence[VCRToken]]) -> list[int]:
    """Object indices in order of first mention across the given token lists (ONLY_USE_RELEVANT_DETS)."""
    seen: dict[int, None] = {}
    for tokens in token_lists:
        for index in object_indices_in(tokens):
            seen.setdefault(index, None)
    return list(seen)
