"""Long-term memory: recall latency at 1,000 and 10,000 memories, and how well a scripted multi-session
conversation's facts are recalled.

1. **Latency.** Synthetic, varied memories (templates × vocabularies, seeded) are written through the LangGraph
   store (`QdrantMemoryStore` on the embedded Qdrant Edge, batch-embedded by the packaged MiniLM) into one user's
   namespace, beside another user's memories. Then `recall()` — what the `recall_memory` node runs each turn:
   one query embedding, a hybrid search for relevant memories and one for the always-on preferences — is timed
   over varied questions at 1,000 and at 10,000 memories (goal: p95 < 50 ms). The query embedding alone is
   timed too, since it is most of the cost.
2. **Quality.** A scripted conversation over three sessions (threads) states facts, corrects two of them, asks
   to forget one and asks unrelated questions; every message goes through the real answer graph (recall →
   retrieve → … → `write_memory`). Extraction is done by a deterministic fake chat model that returns the JSON
   an ideal extractor would (`--llm fast|default` uses the packaged model instead). Then one probe question per
   fact checks that `recall()` returns the current fact and none of the replaced or forgotten ones.

    python -m benchmarks.memory                 # latency + scripted conversation (fake extractor)
    python -m benchmarks.memory --llm default   # the conversation with the packaged 1.5B model extracting
    python -m benchmarks.memory --sizes 1000 --queries 50

Writes `benchmarks/results/memory.json`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

RESULTS = ROOT / "benchmarks" / "results" / "memory.json"
USER = "bench"
MODEL_NAMES = {"default": "qwen2.5-coder-1.5b-instruct", "fast": "qwen2.5-coder-0.5b-instruct"}

# ---------------------------------------------------------------------------------------------- synthetic data
TOOLS = ["R", "Python", "Julia", "Excel", "SQL", "Rust", "Go", "MATLAB", "Stata", "SPSS", "Tableau", "Power BI",
         "dbt", "Airflow", "Spark", "Kafka", "Docker", "Kubernetes", "Terraform", "Ansible", "vim", "Emacs",
         "VS Code", "PyCharm", "Jupyter", "RStudio", "Zotero", "Obsidian", "Notion", "LaTeX"]
TASKS = ["data cleaning", "statistics", "plotting", "web scraping", "reporting", "machine learning", "ETL jobs",
         "note taking", "writing papers", "teaching", "budgeting", "forecasting", "simulation", "mapping",
         "text mining", "dashboards", "unit testing", "deployment", "code review", "literature reviews"]
PEOPLE = ["Tom", "Anna", "Luis", "Mei", "Omar", "Ines", "Kofi", "Sara", "Jonas", "Priya", "Lena", "Yuki", "Ravi",
          "Nora", "Ivan", "Chloe", "Tariq", "Eva", "Hugo", "Maya"]
RELATIONS = ["manager", "sister", "brother", "cat", "dog", "supervisor", "co-author", "mentor", "landlord",
             "neighbour", "dentist", "accountant", "team lead", "best friend", "cousin"]
CITIES = ["Oslo", "Berlin", "Lisbon", "Nairobi", "Toronto", "Osaka", "Lima", "Krakow", "Dublin", "Porto", "Leeds",
          "Zurich", "Austin", "Hanoi", "Cape Town", "Tallinn", "Bergen", "Lyon", "Seville", "Graz"]
PROJECTS = ["Atlas", "Beacon", "Cobalt", "Delta", "Ember", "Falcon", "Garnet", "Harbor", "Iris", "Juniper",
            "Kestrel", "Lumen", "Mosaic", "Nimbus", "Orchid", "Pioneer", "Quartz", "Rover", "Sierra", "Tundra"]
PROJECT_WHAT = ["route planner for cyclists", "budget tracker", "thesis on soil moisture", "chat bot for the help "
                "desk", "survey of reading habits", "dashboard for energy use", "recipe recommender",
                "study of bird migration", "inventory system", "grant proposal", "mobile game", "podcast archive"]
STYLES = ["short", "detailed", "bullet-point", "step-by-step", "formal", "casual", "example-first", "metric-unit",
          "British-English", "code-heavy", "plain-language", "table-based"]
DAYS = ["Mondays", "Tuesdays", "Wednesdays", "Thursdays", "Fridays", "weekends", "mornings", "evenings"]
HOBBIES = ["climbing", "chess", "running", "pottery", "sailing", "baking", "birdwatching", "cycling", "painting",
           "gardening", "swimming", "photography"]
TECH = ["Postgres", "MySQL", "SQLite", "MongoDB", "Redis", "Qdrant", "DuckDB", "Elasticsearch", "Snowflake",
        "BigQuery", "React", "Vue", "Django", "Flask", "FastAPI", "Rails"]

TEMPLATES: list[tuple[str, str]] = [
    ("fact", "The user uses {tool} for {task}."),
    ("fact", "The user's {relation} is called {person}."),
    ("fact", "The user lived in {city} for {n} years."),
    ("fact", "The user does {hobby} on {day}."),
    ("preference", "The user prefers {style} answers when asking about {task}."),
    ("preference", "The user likes {tool} better than {tool2} for {task}."),
    ("project", "The user works on the {project} project, a {what}."),
    ("project", "The {project} project uses {tech} and {tool}."),
    ("decision", "The team decided to use {tech} for the {project} project in {city}."),
    ("decision", "The user decided to stop using {tool2} for {task}."),
]
QUESTION_TEMPLATES = [
    "Which tool do I use for {task}?", "What is my {relation} called?", "Where did I live?",
    "How do I like answers about {task}?", "What is the {project} project about?", "Which database does {project} use?",
    "What did we decide for the {project} project?", "When do I go {hobby}?", "Do I still use {tool}?",
    "What do I know about {tech}?", "Remind me what I said about {city}.", "Which editor do I prefer?",
]


def synthetic_memories(n: int, seed: int = 7) -> list[tuple[str, str]]:
    """`n` varied (kind, text) memories."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        kind, template = rng.choice(TEMPLATES)
        tool, tool2 = rng.sample(TOOLS, 2)
        out.append((kind, template.format(
            tool=tool, tool2=tool2, task=rng.choice(TASKS), relation=rng.choice(RELATIONS), person=rng.choice(PEOPLE),
            city=rng.choice(CITIES), n=rng.randint(2, 15), hobby=rng.choice(HOBBIES), day=rng.choice(DAYS),
            style=rng.choice(STYLES), project=rng.choice(PROJECTS), what=rng.choice(PROJECT_WHAT),
            tech=rng.choice(TECH))))
    return out


def synthetic_questions(n: int, seed: int = 11) -> list[str]:
    """`n` varied questions about the user."""
    rng = random.Random(seed)
    return [rng.choice(QUESTION_TEMPLATES).format(
        task=rng.choice(TASKS), relation=rng.choice(RELATIONS), project=rng.choice(PROJECTS),
        hobby=rng.choice(HOBBIES), tool=rng.choice(TOOLS), tech=rng.choice(TECH), city=rng.choice(CITIES))
        for _ in range(n)]


def pct(values: Sequence[float], p: int) -> float:
    """The p-th percentile (inclusive method)."""
    vals = sorted(values)
    if len(vals) == 1:
        return vals[0]
    return statistics.quantiles(vals, n=100, method="inclusive")[p - 1]


# ---------------------------------------------------------------------------------------------- latency
def write_memories(store: Any, user: str, items: Sequence[tuple[str, str]], start: int, batch: int = 500) -> float:
    """Put memories through the store in batches (one embedding batch each); returns seconds."""
    from langgraph.store.base import PutOp

    from graphs.memory.models import MemoryItem, memory_namespace

    t = time.perf_counter()
    for i in range(0, len(items), batch):
        ops = []
        for j, (kind, text) in enumerate(items[i:i + batch], start=start + i):
            item = MemoryItem(id=f"m{j:06d}", text=text, kind=kind, source_thread="bench", source_turn=j)  # type: ignore[arg-type]
            ops.append(PutOp(memory_namespace(user), item.id, item.to_value()))
        store.batch(ops)
    return time.perf_counter() - t


def time_recall(store: Any, questions: Sequence[str], embedder: Any) -> dict[str, Any]:
    """p50/p95 of `recall()` (and of the query embedding alone) over `questions`, after a warm-up."""
    from graphs.memory import recall

    for q in questions[:5]:
        recall(store, USER, q)
    totals, embeds, counts = [], [], []
    for q in questions:
        t = time.perf_counter()
        got = recall(store, USER, q)
        totals.append((time.perf_counter() - t) * 1000)
        counts.append(len(got))
        t = time.perf_counter()
        embedder.embed_query(q)
        embeds.append((time.perf_counter() - t) * 1000)
    return {"queries": len(questions), "p50_ms": round(pct(totals, 50), 2), "p95_ms": round(pct(totals, 95), 2),
            "max_ms": round(max(totals), 2), "embed_p50_ms": round(pct(embeds, 50), 2),
            "embed_p95_ms": round(pct(embeds, 95), 2),
            "search_p50_ms": round(pct([a - b for a, b in zip(totals, embeds, strict=True)], 50), 2),
            "memories_returned_mean": round(statistics.mean(counts), 2)}


def latency(sizes: Sequence[int], n_questions: int, workdir: Path) -> list[dict[str, Any]]:
    """Grow one user's memories to each size in turn and time recall at each."""
    from core.encoders import get_bm25, get_embedder
    from graphs.memory import QdrantMemoryStore
    from store.factory import Backend

    # One torch thread, as the product runs it (settings.torch_threads): with two, a busy second core makes
    # every query embedding wait for it.
    embedder = get_embedder("packaged:all-MiniLM-L6-v2", 32, 1)
    sizes = sorted(sizes)
    items = synthetic_memories(max(sizes))
    others = synthetic_memories(max(200, max(sizes) // 10), seed=99)
    questions = synthetic_questions(n_questions)
    rows: list[dict[str, Any]] = []
    with Backend(root=workdir / "latency") as backend:
        store = QdrantMemoryStore(backend.collection("memories", embedder.dim, {"embedding_model": embedder.model_id}),
                                  embedder, get_bm25())
        write_memories(store, "someone-else", others, 0)  # another user's memories share the collection
        have = 0
        for size in sizes:
            seconds = write_memories(store, USER, items[have:size], have)
            added = size - have
            have = size
            row = {"memories": size, "other_users_memories": len(others),
                   "write_per_s": round(added / seconds, 1) if seconds else None,
                   **time_recall(store, questions, embedder)}
            rows.append(row)
            row["load_average_1m"] = round(os.getloadavg()[0], 2)  # other work on the machine skews timings
            print(f"  {size:>6} memories: recall p50 {row['p50_ms']} ms, p95 {row['p95_ms']} ms "
                  f"(embedding p50 {row['embed_p50_ms']} ms); wrote {row['write_per_s']}/s", flush=True)
    return rows


# ---------------------------------------------------------------------------------------------- conversation
# (message, what an ideal extractor returns for the sentences no rule claims)
SESSIONS: list[list[tuple[str, list[dict[str, Any]]]]] = [
    [
        ("Hi! I work as a data engineer at Acme.",
         [{"text": "The user works as a data engineer at Acme.", "kind": "fact"}]),
        ("I use R on Windows for most of my analysis.",
         [{"text": "The user uses R on Windows for most of their analysis.", "kind": "fact"}]),
        ("Please answer in bullet points from now on.", []),
        ("My current project is called Atlas, a route planner for cyclists.",
         [{"text": "The user's current project is Atlas, a route planner for cyclists.", "kind": "project"}]),
    ],
    [
        ("We decided to use Postgres as the database for Atlas.",
         [{"text": "The user decided to use Postgres as the database for Atlas.", "kind": "decision"}]),
        ("Actually I moved from Windows to Linux.", []),
        ("Remember that my cat is called Tom.", []),
        ("How do I brew green tea?", []),
        ("I live in Oslo.", [{"text": "The user lives in Oslo.", "kind": "fact"}]),
    ],
    [
        ("I have moved house, I live in Berlin now.", [{"text": "The user lives in Berlin.", "kind": "fact"}]),
        ("Forget that my cat is called Tom.", []),
        ("I prefer metric units.", [{"text": "The user prefers metric units.", "kind": "preference"}]),
        ("I use VS Code as my editor.", [{"text": "The user uses VS Code as their editor.", "kind": "fact"}]),
        ("Remember that Atlas ships in June.", []),
        ("Thanks, that helps!", []),
    ],
]
# (probe question, a word the recalled memories must contain, words they must not contain)
PROBES: list[tuple[str, str | None, list[str]]] = [
    ("Where do I work?", "Acme", []),
    ("What is my job?", "data engineer", []),
    ("Which operating system do I run R on?", "Linux", ["Windows"]),
    ("How should answers be formatted for me?", "bullet points", []),
    ("What is my project called?", "Atlas", []),
    ("Which database did we choose for Atlas?", "Postgres", []),
    ("Where do I live?", "Berlin", ["Oslo"]),
    ("What is my cat called?", None, ["Tom"]),
    ("Which units do I prefer?", "metric", []),
    ("Which editor do I use?", "VS Code", []),
    ("When does Atlas ship?", "June", []),
]


def scripted_chat() -> Any:
    """A fake chat model: the scripted extraction JSON for extraction prompts, the question for rewrites."""
    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
    from langchain_core.messages import AIMessage
    from langchain_core.outputs import ChatGeneration, ChatResult
    from pydantic import Field

    script = {msg: found for session in SESSIONS for msg, found in session}

    class Scripted(GenericFakeChatModel):
        messages: Any = Field(default_factory=lambda: iter(()))

        def _generate(self, messages: Any, stop: Any = None, run_manager: Any = None, **kw: Any) -> ChatResult:
            system, user = str(messages[0].content), str(messages[-1].content)
            if "worth remembering" in system:
                said = user.split("Message:", 1)[-1].strip()
                found = next((v for k, v in script.items() if said and said in k), [])
                text = json.dumps({"memories": found})
            elif "standalone search question" in system:
                text = re.search(r"Last message:\s*(.+)", user).group(1)  # type: ignore[union-attr]
            else:
                text = "ok"
            return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text))])

    return Scripted()


def conversation(workdir: Path, llm: str) -> dict[str, Any]:
    """Run the scripted sessions through the answer graph, then probe recall; share of facts right."""
    from core.encoders import get_bm25, get_embedder
    from core.settings import Settings
    from graphs.engine import AnswerEngine
    from graphs.memory import recall
    from retrieval.search import Retriever
    from store.factory import Backend

    data = workdir / "conversation"
    (data / "inbox").mkdir(parents=True)
    overrides: dict[str, Any] = {}
    if llm != "none":
        overrides = {"llm_variant": llm, "llm_model": MODEL_NAMES[llm], "llm_port": 8779}
    settings = Settings(_env_file=None, data_dir=data, cache_dir=Path.home() / ".cache" / "second-brain", **overrides)
    embedder = get_embedder(settings.embedding_model, settings.embed_batch_size, settings.torch_threads)
    model = scripted_chat() if llm == "none" else None
    rows: list[dict[str, Any]] = []
    started = time.perf_counter()
    with Backend(root=settings.qdrant_path) as backend:
        chunks = backend.collection(settings.collection, embedder.dim, {"embedding_model": embedder.model_id})
        engine = AnswerEngine(settings, backend, chat_model=model, retriever=Retriever(settings, chunks, embedder,
                                                                                         get_bm25()))
        try:
            writes: list[dict[str, Any]] = []
            for s, session in enumerate(SESSIONS, start=1):
                for message, _ in session:
                    events = list(engine.stream(message, f"session-{s}", user_id=USER))
                    errors = [e.text for e in events if e.kind == "error"]
                    done = next((e for e in events if e.node == "write_memory" and e.data.get("status") == "done"),
                                None)
                    writes.append({"message": message, "errors": errors,
                                   "seconds": done.data.get("seconds") if done else None})
            memory = engine.memory
            for question, want, never in PROBES:
                got = [m.text for m in recall(memory.store, USER, question)]
                joined = " | ".join(got)
                ok = (want is None or want.lower() in joined.lower()) and not any(w in joined for w in never)
                rows.append({"question": question, "want": want, "never": never, "recalled": got, "ok": ok})
            current = [m.text for m in memory.list(USER)]
            history = [m.text for m in memory.history(USER)]
        finally:
            engine.close()
            if llm != "none":
                from graphs.llm_server import stop_llm

                stop_llm()
    correct = sum(r["ok"] for r in rows)
    return {"extractor": "scripted fake (ideal JSON)" if llm == "none" else f"packaged {MODEL_NAMES[llm]}",
            "messages": sum(len(s) for s in SESSIONS), "sessions": len(SESSIONS), "facts": len(rows),
            "correct": correct, "share": round(correct / len(rows), 3),
            "recalled_per_probe_mean": round(statistics.mean(len(r["recalled"]) for r in rows), 2),
            "seconds": round(time.perf_counter() - started, 1),
            "write_memory_seconds": [w["seconds"] for w in writes], "errors": [w for w in writes if w["errors"]],
            "current": current, "history": history, "probes": rows}


# ---------------------------------------------------------------------------------------------- main
def main(argv: Sequence[str] | None = None) -> int:
    """Run both parts, print tables, write `benchmarks/results/memory.json`."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--llm", choices=["none", "fast", "default"], default="none",
                    help="extractor for the conversation: the scripted fake (none) or a packaged model")
    ap.add_argument("--skip-latency", action="store_true")
    args = ap.parse_args(argv)

    out: dict[str, Any] = {"machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                                       "platform": platform.platform()}}
    if RESULTS.exists():  # keep the other part's figures when only one part is rerun
        with contextlib.suppress(ValueError):
            out.update({k: v for k, v in json.loads(RESULTS.read_text()).items() if k in ("latency", "conversation")})
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if not args.skip_latency:
            print("recall latency (embedded Qdrant Edge, MiniLM on CPU):", flush=True)
            out["latency"] = latency(args.sizes, args.queries, work)
        print("scripted multi-session conversation:", flush=True)
        conv = conversation(work, args.llm)
        out.setdefault("conversation", {})
        if not isinstance(out["conversation"], dict) or "extractor" in out["conversation"]:
            out["conversation"] = {}
        out["conversation"][args.llm] = conv

    if "latency" in out:
        print("\n| memories | recall p50 ms | recall p95 ms | max ms | query embedding p50 ms | search p50 ms "
              "| writes/s |")
        print("|---:|---:|---:|---:|---:|---:|---:|")
        for r in out["latency"]:
            print(f"| {r['memories']:,} | {r['p50_ms']} | {r['p95_ms']} | {r['max_ms']} | {r['embed_p50_ms']} | "
                  f"{r['search_p50_ms']} | {r['write_per_s']} |")
    print("\n| extractor | facts | recalled correctly | share | memories recalled per probe | seconds |")
    print("|---|---:|---:|---:|---:|---:|")
    for c in out["conversation"].values():
        print(f"| {c['extractor']} | {c['facts']} | {c['correct']} | {c['share']:.0%} | "
              f"{c.get('recalled_per_probe_mean', '')} | {c['seconds']} |")
    for r in conv["probes"]:
        if not r["ok"]:
            print(f"  ✗ {r['question']} → {r['recalled']}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2, default=str) + "\n")
    print(f"\nwrote {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
