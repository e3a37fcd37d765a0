"""What to remember from a user's message: deterministic commands first, then the chat model.

Commands are handled by rules, never by the model, so they always do the same thing:
- "remember (that) …" / "note that …" / "keep in mind …" → a memory, in the user's words;
- "forget (that|about) …" → every matching memory is deleted and kept from coming back;
- "(actually) I moved|switched|changed from X to Y" → memories that mention X are superseded by copies
  that say Y (the old ones stay as history);
- a standing instruction ("from now on, answer in bullet points") → a preference.

Sentences no rule claims go to the chat model, but only when they say something about the user (a cheap
check: first person or a preference word, and not a question), because on a CPU every extraction costs
seconds of the shared model. The model answers in JSON (`Extraction`); on the packaged llama.cpp server the
JSON schema is enforced by a grammar; any other reply is parsed leniently, and a reply that does not parse
extracts nothing.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from langchain_core.language_models import BaseChatModel

from graphs.memory.models import ExtractedMemory, Extraction
from graphs.nodes.common import message_text
from graphs.prompts import load_prompt

log = logging.getLogger(__name__)

EXTRACT_PROMPT = "memory_extract.v1"
EXTRACT_MAX_TOKENS = 160  # three short memories in JSON; more is the model rambling
MAX_MEMORY_CHARS = 300

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")  # "24.04" and "Node.js" do not end a sentence
_REMEMBER = re.compile(
    r"^\s*(?:please\s+|can you\s+|could you\s+)?(?:remember|note|keep in mind|don'?t forget|do not forget)"
    r"(?:\s*:\s*|\s+that\s+|\s+)(?P<x>.+?)\s*[.!]*\s*$", re.IGNORECASE)
_REMEMBER_TO = re.compile(r"^to\s+(?P<x>.+)$", re.IGNORECASE)
_FORGET = re.compile(
    r"^\s*(?:please\s+|can you\s+|could you\s+)?(?:forget|stop remembering|delete the memory|remove the memory)"
    r"(?:\s*:\s*|\s+that\s+|\s+about\s+|\s+)(?P<x>.+?)\s*[.!]*\s*$", re.IGNORECASE)
_NAME_PART = r"[\w+#/-]+(?:\.[\w+#/-]+)*"  # "Node.js", "24.04", "C++"; a final full stop is not part of it
_TERM = rf"{_NAME_PART}(?:\s+{_NAME_PART}){{0,2}}?"  # a name of up to three words: "Windows", "VS Code"
_TERM_END = (r"(?=\s+(?:last|this|yesterday|recently|since|because|ago|for|when|but|so|and|now|a|an|in|at|"
             r"on|as|which|that|after|before)\b|\s*[.!?,;:)]|\s*$)")
_MOVED = re.compile(
    r"\b(?:moved|switched|changed|migrated|went|upgraded|converted|changing|switching|moving)\s+(?:over\s+)?"
    rf"from\s+(?P<old>{_TERM})\s+(?:to|over to|onto)\s+(?P<new>{_TERM}){_TERM_END}",
    re.IGNORECASE)
_STANDING = re.compile(r"\b(from now on|going forward|in (?:the )?future|always|never|every time|by default)\b",
                       re.IGNORECASE)
_TIME_PHRASE = re.compile(r"\b(?:from now on|going forward|in (?:the )?future|every time|by default)\b,?",
                          re.IGNORECASE)  # dropped from the memory; "always"/"never" are kept, they carry meaning
_IMPERATIVE = re.compile(
    r"^\s*(?:please\s+)?(?:always\s+|never\s+|do not\s+|don'?t\s+)?(?:answer|reply|respond|write|use|give|keep|"
    r"show|format|explain|include|avoid|add|call|address|speak|be)\b", re.IGNORECASE)
_QUESTION = re.compile(r"^\s*(?:how|what|why|when|where|which|who|whom|whose|can|could|should|would|will|is|are|"
                       r"do|does|did|has|have|may|might|shall)\b", re.IGNORECASE)
_SELF = re.compile(r"\b(?:i|i'm|i've|i'd|i'll|me|my|mine|myself|we|we're|we've|our|ours|us)\b", re.IGNORECASE)
_PREFERENCE_WORDS = re.compile(
    r"\b(?:prefer|preference|like|love|hate|dislike|want|rather|always|never|please|style|format|bullet|brief|"
    r"short|concise|detailed|language|units?)\b", re.IGNORECASE)
_PROJECT_WORDS = re.compile(r"\b(?:project|working on|work on|building|repo|repository|thesis|app|product)\b",
                            re.IGNORECASE)
_DECISION_WORDS = re.compile(r"\b(?:decided|decision|chose|chosen|settled on|going with|agreed|will use|we'll use)\b",
                             re.IGNORECASE)

# First person → "the user", for memories kept in the user's own words.
# Words with which a user announces that something changed: a similar older memory is then replaced.
_CHANGE = re.compile(r"\b(?:now|no longer|not any ?more|any ?more|instead(?: of)?|actually|these days|nowadays|"
                     r"switched|moved|changed|migrated|replaced|new)\b", re.IGNORECASE)

_IRREGULAR_PAST = {"went", "got", "had", "made", "took", "left", "bought", "began", "chose", "came", "did", "gave",
                   "knew", "saw", "told", "wrote", "ran", "put", "set", "kept", "felt", "found", "thought", "was"}
_MODALS = {"can", "could", "will", "would", "should", "must", "may", "might", "shall"}
_ADVERBS = {"really", "also", "usually", "always", "never", "mostly", "now", "only", "still", "often", "mainly",
            "currently", "sometimes", "rarely", "just", "generally", "actually", "already"}


@dataclass
class Candidate:
    """Something to remember. `replaces` names an older fact it corrects; `explicit` is the user's command."""

    text: str
    kind: str = "fact"
    replaces: str | None = None
    explicit: bool = False
    change: bool = False  # the user's words announce a change ("now", "no longer", "instead of")


@dataclass
class Plan:
    """What one message asks of memory: new memories, forgets, X→Y corrections, and text left for the model."""

    remember: list[Candidate] = field(default_factory=list)
    forget: list[str] = field(default_factory=list)
    corrections: list[tuple[str, str, str]] = field(default_factory=list)  # (old, new, the user's sentence)
    rest: str = ""

    @property
    def commands(self) -> bool:
        """Whether any rule fired."""
        return bool(self.remember or self.forget or self.corrections)


def sentences(text: str) -> list[str]:
    """The message cut into sentences (line breaks end one too)."""
    return [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]


def _verb_s(verb: str) -> str:
    low = verb.lower()
    if low in _IRREGULAR_PAST or low.endswith("ed") or low in _MODALS:
        return verb
    if low in ("am", "'m"):
        return "is"
    if low in ("have", "'ve"):
        return "has"
    if low == "do":
        return "does"
    if low.endswith(("s", "sh", "ch", "x", "z", "o")):
        return verb + "es"
    if len(low) > 2 and low.endswith("y") and low[-2] not in "aeiou":
        return verb[:-1] + "ies"
    return verb + "s"


def third_person(text: str) -> str:
    """Rewrite a first-person statement about the user: "I use R on Windows" → "The user uses R on Windows."

    Imperatives ("answer in bullet points") become a preference: "The user prefers that you answer …".
    Only the common shapes are handled; anything else is kept as written.
    """
    text = " ".join(text.strip().split()).rstrip(".!;, ")
    if not text:
        return ""
    text = re.sub(r"^(?:that|actually|also|and|so|ok(?:ay)?|well)[, ]+", "", text, flags=re.IGNORECASE)
    if _IMPERATIVE.match(text) and not _SELF.match(text):
        text = re.sub(r"^please\s+", "", text, flags=re.IGNORECASE)
        return f"The user prefers that you {text[0].lower()}{text[1:]}."
    text = re.sub(r"\bI'm\b", "I am", text)
    text = re.sub(r"\bI've\b", "I have", text)
    text = re.sub(r"\bI'd\b", "I would", text)
    text = re.sub(r"\bI'll\b", "I will", text)
    text = re.sub(r"\bI don't\b", "I do not", text, flags=re.IGNORECASE)

    def subject(m: re.Match[str]) -> str:
        adverbs, verb = m.group("adv") or "", m.group("verb")
        return f"the user {adverbs}{_verb_s(verb)}"

    text = re.sub(rf"\bI\s+(?P<adv>(?:(?:{'|'.join(_ADVERBS)})\s+)*)(?P<verb>[A-Za-z']+)", subject, text)
    text = re.sub(r"\b[Mm]y\b", "the user's", text)
    text = re.sub(r"\b[Mm]ine\b", "the user's", text)
    text = re.sub(r"\b[Mm]yself\b", "themselves", text)
    text = re.sub(r"\bme\b", "the user", text)
    text = re.sub(r"\bI\b", "the user", text)
    return text[0].upper() + text[1:] + "."


def about_the_user(question: str) -> str:
    """A question in the words memories are written in: "Where do I work?" → "Where does the user work?".

    Memories say "The user …"; MiniLM scores "Where do I work?" closer to "The user lives in Berlin" (0.22) than to
    "The user works as a data engineer at Acme" (0.20), and the rewritten question ranks the right one first
    (0.51 vs 0.45, measured on the memory benchmark's probes).
    """
    aux = {"do": "does", "have": "has", "am": "is", "are": "is", "were": "was"}
    q = re.sub(r"\b(do|did|have|had|am|was|can|could|should|would|will|are|were)\s+(?:I|we)\b",
               lambda m: f"{aux.get(m.group(1).lower(), m.group(1))} the user", question, flags=re.IGNORECASE)
    q = re.sub(r"\b(?:I|we)\b", "the user", q, flags=re.IGNORECASE)
    q = re.sub(r"\b(?:my|our|mine|ours)\b", "the user's", q, flags=re.IGNORECASE)
    return re.sub(r"\b(?:me|us|myself|ourselves)\b", "the user", q, flags=re.IGNORECASE)


def guess_kind(text: str) -> str:
    """preference | project | decision | fact, from the words of a statement."""
    if _DECISION_WORDS.search(text):
        return "decision"
    if _PREFERENCE_WORDS.search(text) or _IMPERATIVE.match(text):
        return "preference"
    if _PROJECT_WORDS.search(text):
        return "project"
    return "fact"


def is_question(sentence: str) -> bool:
    """A question (or a request for information) says nothing durable about the user."""
    return sentence.rstrip().endswith("?") or bool(_QUESTION.match(sentence))


def worth_extracting(text: str) -> bool:
    """Whether the model should look at `text`: a statement in the first person, or a preference word."""
    return any(not is_question(s) and (_SELF.search(s) or _PREFERENCE_WORDS.search(s)) for s in sentences(text))


def standing_instruction(sentence: str) -> str | None:
    """The instruction in "From now on, answer in bullet points." ("answer in bullet points"), else None."""
    if not _STANDING.search(sentence) or is_question(sentence):
        return None
    text = _TIME_PHRASE.sub("", sentence)
    text = re.sub(r"[, ]+please$", "", " ".join(text.replace(" ,", ",").split()).strip(" ,.!"), flags=re.I)
    return text if text and _IMPERATIVE.match(text) else None


def plan(message: str) -> Plan:
    """Apply the rules sentence by sentence; what no rule claims is left in `rest` for the model."""
    out = Plan()
    rest: list[str] = []
    for s in sentences(message):
        if m := _REMEMBER.match(s):
            x = m.group("x")
            if to := _REMEMBER_TO.match(x):  # "remember to answer briefly": an instruction, so a preference
                out.remember.append(Candidate(third_person(to.group("x")), "preference", explicit=True))
            else:
                text = third_person(x)
                out.remember.append(Candidate(text, guess_kind(x), explicit=True))
        elif m := _FORGET.match(s):
            out.forget.append(m.group("x").strip())
        elif (m := _MOVED.search(s)) and not is_question(s):
            out.corrections.append((m.group("old").strip(), m.group("new").strip(), s))
        elif (instruction := standing_instruction(s)) is not None:
            out.remember.append(Candidate(third_person(instruction), "preference", explicit=True))
        else:
            rest.append(s)
    out.rest = " ".join(rest)
    return out


# ---------------------------------------------------------------------------------------------- the model
def parse_extraction(raw: str) -> Extraction:
    """The model's reply as an `Extraction`: the first JSON object (or list of memories) in the text."""
    raw = raw.strip()
    raw = re.sub(r"^```(?:json)?\s*|\s*```$", "", raw)
    candidates: list[Any] = []
    for opener, closer in (("{", "}"), ("[", "]")):
        start, end = raw.find(opener), raw.rfind(closer)
        if start != -1 and end > start:
            try:
                candidates.append(json.loads(raw[start:end + 1]))
            except json.JSONDecodeError:
                continue
    for data in candidates:
        if isinstance(data, list):
            data = {"memories": data}
        if isinstance(data, dict) and "memories" not in data and "text" in data:
            data = {"memories": [data]}
        try:
            return Extraction.model_validate(data)
        except ValueError:
            continue
    return Extraction()


def _json_runnable(model: BaseChatModel, packaged_llama_cpp: bool) -> tuple[Any, str]:
    """The model set up to answer in the extraction schema, and how (for the step details)."""
    if packaged_llama_cpp:
        # llama-cpp-python's server takes `json_object` + `schema` (a grammar), not OpenAI's `json_schema`.
        fmt = {"type": "json_object", "schema": Extraction.model_json_schema()}
        try:
            return model.bind(temperature=0.0, max_tokens=EXTRACT_MAX_TOKENS,
                              extra_body={"max_tokens": EXTRACT_MAX_TOKENS, "response_format": fmt}), "grammar"
        except Exception:  # a model class that rejects these kwargs
            return model, "prompt"
    try:
        return model.with_structured_output(Extraction, method="json_schema", include_raw=True), "json_schema"
    except (NotImplementedError, ValueError, TypeError):
        return model, "prompt"


def extract_with_model(model: BaseChatModel, message: str, packaged_llama_cpp: bool = False) -> tuple[Extraction, dict]:
    """Durable memories in `message`, by the chat model; `(extraction, details)`. Never raises."""
    prompt = load_prompt(EXTRACT_PROMPT).render(message=message.strip())
    runnable, how = _json_runnable(model, packaged_llama_cpp)
    info: dict[str, Any] = {"method": how}
    try:
        reply = runnable.invoke(prompt)
    except Exception as exc:
        if how != "json_schema":
            info["error"] = f"{type(exc).__name__}: {exc}"
            log.warning("memory extraction failed: %s", exc)
            return Extraction(), info
        # An endpoint without structured output: ask again in plain text and parse.
        info["method"] = "prompt"
        try:
            reply = model.invoke(prompt)
        except Exception as exc2:
            info["error"] = f"{type(exc2).__name__}: {exc2}"
            log.warning("memory extraction failed: %s", exc2)
            return Extraction(), info
    if isinstance(reply, dict):  # with_structured_output(include_raw=True)
        if isinstance(reply.get("parsed"), Extraction):
            result: Extraction = reply["parsed"]
            info["raw"] = message_text(reply.get("raw"))
            return _clean(result), info
        reply = reply.get("raw")
    raw = message_text(reply)
    info["raw"] = raw
    return _clean(parse_extraction(raw)), info


def _clean(extraction: Extraction) -> Extraction:
    kept: list[ExtractedMemory] = []
    seen: set[str] = set()
    for m in extraction.memories:
        text = " ".join(m.text.split()).strip()
        if not text or len(text) > MAX_MEMORY_CHARS or text.endswith("?") or text.lower() in seen:
            continue
        seen.add(text.lower())
        if not text.endswith((".", "!")):
            text += "."
        kept.append(ExtractedMemory(text=text[0].upper() + text[1:], kind=m.kind,
                                    replaces=(m.replaces or "").strip() or None))
    return Extraction(memories=kept[:5])


def candidates_for(message: str, model: Callable[[], BaseChatModel] | None, *, mode: str = "auto",
                   packaged_llama_cpp: bool | Callable[[BaseChatModel], bool] = False,
                   ) -> tuple[Plan, list[Candidate], dict]:
    """The rules' plan for `message`, plus the model's candidates for the sentences no rule claimed.

    `model` is a factory, called only when the model is needed. `mode`: `auto` (the model only for
    first-person statements), `always`, or `off` (rules only). `packaged_llama_cpp` (or a test of the model)
    says whether the endpoint is the packaged llama.cpp server, which takes a JSON schema as a grammar.
    """
    p = plan(message)
    info: dict[str, Any] = {"rules": p.commands}
    found: list[Candidate] = []
    if model is not None and p.rest and (mode == "always" or (mode == "auto" and worth_extracting(p.rest))):
        llm = model()
        packaged = packaged_llama_cpp(llm) if callable(packaged_llama_cpp) else packaged_llama_cpp
        extraction, details = extract_with_model(llm, p.rest, packaged)
        info["llm"] = details
        change = bool(_CHANGE.search(p.rest))
        found = [Candidate(m.text, m.kind, m.replaces, change=change) for m in extraction.memories]
    return p, found, info
