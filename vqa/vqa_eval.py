"""The official VQA v2 accuracy (GT-Vision-Lab `vqaEval.py` at HEAD a013f00), answer normalisation included.

One scoring rule serves the soft training targets, the `SoftAcc` validation metric and `vqa/eval.py`.
"""
from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence

# Marks handled by the punctuation step, in the evaluator's order; the apostrophe and the colon are kept.
PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!")
DIGIT_COMMA_DIGIT = re.compile(r"(\d)(,)(\d)")
# The evaluator's pattern "(?!<=\d)(\.)(?!\d)" opens with a look-ahead that always passes at a '.', so it
# deletes every period not followed by a digit; re.UNICODE sits in its count slot, so at most 32 go.
PERIOD_NOT_BEFORE_DIGIT = re.compile(r"\.(?!\d)")
PERIOD_LIMIT = 32
NUMBER_WORDS = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4",
    "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}
ARTICLES = frozenset({"a", "an", "the"})


def _contractions() -> dict[str, str]:
    """The evaluator's contraction table: written form without apostrophes -> standard form.

    Keys with capitals (Im, Ive, Id've, I'dve) never match after lower-casing but are kept for fidelity,
    and so is the odd `somebody'd -> somebodyd` entry.
    """
    table = (
        "aint=ain't arent=aren't cant=can't couldve=could've couldnt=couldn't couldn'tve=couldn't've "
        "couldnt've=couldn't've didnt=didn't doesnt=doesn't dont=don't hadnt=hadn't hadnt've=hadn't've "
        "hadn'tve=hadn't've hasnt=hasn't havent=haven't hed=he'd hed've=he'd've he'dve=he'd've hes=he's "
        "howd=how'd howll=how'll hows=how's Id've=I'd've I'dve=I'd've Im=I'm Ive=I've isnt=isn't itd=it'd "
        "itd've=it'd've it'dve=it'd've itll=it'll let's=let's maam=ma'am mightnt=mightn't mightnt've=mightn't've "
        "mightn'tve=mightn't've mightve=might've mustnt=mustn't mustve=must've neednt=needn't notve=not've "
        "oclock=o'clock oughtnt=oughtn't ow's'at='ow's'at 'ows'at='ow's'at 'ow'sat='ow's'at shant=shan't "
        "shed've=she'd've she'dve=she'd've she's=she's shouldve=should've shouldnt=shouldn't "
        "shouldnt've=shouldn't've shouldn'tve=shouldn't've somebody'd=somebodyd somebodyd've=somebody'd've "
        "somebody'dve=somebody'd've somebodyll=somebody'll somebodys=somebody's someoned=someone'd "
        "someoned've=someone'd've someone'dve=someone'd've someonell=someone'll someones=someone's "
        "somethingd=something'd somethingd've=something'd've something'dve=something'd've "
        "somethingll=something'll thats=that's thered=there'd thered've=there'd've there'dve=there'd've "
        "therere=there're theres=there's theyd=they'd theyd've=they'd've they'dve=they'd've theyll=they'll "
        "theyre=they're theyve=they've twas='twas wasnt=wasn't wed've=we'd've we'dve=we'd've weve=we've "
        "werent=weren't whatll=what'll whatre=what're whats=what's whatve=what've whens=when's whered=where'd "
        "wheres=where's whereve=where've whod=who'd whod've=who'd've who'dve=who'd've wholl=who'll whos=who's "
        "whove=who've whyll=why'll whyre=why're whys=why's wont=won't wouldve=would've wouldnt=wouldn't "
        "wouldnt've=wouldn't've wouldn'tve=wouldn't've yall=y'all yall'll=y'all'll y'allll=y'all'll "
        "yall'd've=y'all'd've y'alld've=y'all'd've y'all'dve=y'all'd've youd=you'd youd've=you'd've "
        "you'dve=you'd've youll=you'll youre=you're youve=you've"
    )
    return dict(pair.split("=", 1) for pair in table.split())


CONTRACTIONS = _contractions()


def process_punctuation(text: str) -> str:
    """Delete or blank out punctuation exactly as the evaluator does (decisions read the *original* text)."""
    has_digit_comma = DIGIT_COMMA_DIGIT.search(text) is not None
    out = text
    for mark in PUNCTUATION:
        if mark + " " in text or " " + mark in text or has_digit_comma:
            out = out.replace(mark, "")
        else:
            out = out.replace(mark, " ")
    return PERIOD_NOT_BEFORE_DIGIT.sub("", out, count=PERIOD_LIMIT)


def process_digit_article(text: str) -> str:
    """Lower-case, number words -> digits, drop articles, restore contractions, single spaces."""
    words = [NUMBER_WORDS.get(word, word) for word in text.lower().split()]
    words = [CONTRACTIONS.get(word, word) for word in words if word not in ARTICLES]
    return " ".join(words)


def clean_whitespace(text: str) -> str:
    return text.replace("\n", " ").replace("\t", " ").strip()


def normalize_answer(text: str) -> str:
    """Full normalisation (whitespace, punctuation, digits/articles/contractions) of one answer string."""
    return process_digit_article(process_punctuation(clean_whitespace(text)))


def leave_one_out_score(matches_per_answer: Sequence[bool]) -> float:
    """Mean over the leave-one-out subsets of min(1, #matching others / 3).

    `matches_per_answer[i]` says whether human answer i equals the prediction. With 10 answers, k matches
    give 0, 0.3, 0.6, 0.9 and 1.0 for k = 0, 1, 2, 3, >= 4.
    """
    n = len(matches_per_answer)
    if n == 0:
        return 0.0
    total_matches = sum(bool(m) for m in matches_per_answer)
    scores = [min(1.0, (total_matches - bool(m)) / 3.0) for m in matches_per_answer]
    return sum(scores) / n


def score_count(k: int, n: int = 10) -> float:
    """leave_one_out_score for an answer given by k of n humans (closed form used for soft targets)."""
    return leave_one_out_score([True] * k + [False] * (n - k))


def vqa_accuracy(prediction: str, gt_answers: Sequence[str]) -> float:
    """Official accuracy in [0, 1] of one predicted answer against the human answers of one question.

    Whitespace is cleaned on both sides; only when the human answers are not all identical are they and the
    prediction normalised (the evaluator's rule at HEAD: "Yes" against ten "yes" scores 0).
    """
    gts = [clean_whitespace(a) for a in gt_answers]
    pred = clean_whitespace(prediction)
    if len(set(gts)) > 1:
        gts = [process_digit_article(process_punctuation(a)) for a in gts]
        pred = process_digit_article(process_punctuation(pred))
    return leave_one_out_score([a == pred for a in gts])


def evaluate(predictions: Mapping[int, str], annotations: Iterable[Mapping], digits: int = 2) -> dict:
    """Official report: overall, perAnswerType and perQuestionType accuracies in percent, plus per-question.

    `predictions` maps question_id -> answer and must cover exactly the annotated ids (as the evaluator asserts).
    `annotations` are entries of a v2 annotations file (question_id, answers, answer_type, question_type).
    """
    annotations = list(annotations)
    annotated = {int(a["question_id"]) for a in annotations}
    missing, extra = annotated - set(predictions), set(predictions) - annotated
    if missing or extra:
        raise ValueError(
            f"results must cover exactly the annotated questions: {len(missing)} missing "
            f"(e.g. {sorted(missing)[:5]}), {len(extra)} not annotated (e.g. {sorted(extra)[:5]})"
        )
    per_question: dict[int, float] = {}
    by_answer_type: dict[str, list[float]] = defaultdict(list)
    by_question_type: dict[str, list[float]] = defaultdict(list)
    for ann in annotations:
        qid = int(ann["question_id"])
        acc = vqa_accuracy(predictions[qid], [a["answer"] for a in ann["answers"]])
        per_question[qid] = acc
        by_answer_type[ann.get("answer_type", "unknown")].append(acc)
        by_question_type[ann.get("question_type", "unknown")].append(acc)

    def pct(values: list[float]) -> float:
        return round(100.0 * sum(values) / len(values), digits)

    return {
        "overall": pct(list(per_question.values())) if per_question else 0.0,
        "perAnswerType": {k: pct(v) for k, v in by_answer_type.items()},
        "perQuestionType": {k: pct(v) for k, v in by_question_type.items()},
        "perQuestion": {qid: round(100.0 * acc, digits) for qid, acc in per_question.items()},
    }


def load_results(path: str) -> dict[int, str]:
    """Read an EvalAI result file (a JSON list of {"question_id", "answer"}); errors name the file and entry."""
    with open(path) as f:
        try:
            results = json.load(f)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(results, list):
        raise ValueError(f"{path}: expected a JSON list of {{question_id, answer}}, found {type(results).__name__}")
    predictions: dict[int, str] = {}
    duplicates: dict[int, int] = {}
    for i, entry in enumerate(results):
        if not isinstance(entry, dict) or "question_id" not in entry or "answer" not in entry:
            raise ValueError(f"{path}: entry {i} is not a {{question_id, answer}} object: {entry!r}")
        qid = int(entry["question_id"])
        if qid in predictions:
            duplicates[qid] = duplicates.get(qid, 1) + 1
        predictions[qid] = str(entry["answer"])
    if duplicates:
        # upstream keeps the last answer silently, which changes the score; one answer per question is the format
        listed = ", ".join(f"{qid} ({count}x)" for qid, count in sorted(duplicates.items())[:10])
        raise ValueError(f"{path}: {len(duplicates)} question id(s) answered more than once: {listed}"
                         f"{' ...' if len(duplicates) > 10 else ''}")
    return predictions
