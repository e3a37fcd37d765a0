"""Answer latency on the CPU default: time to first token, total time, tokens/s and time per node, p50/p95.

Runs the full answer graph (hybrid retrieval, rerank, answerability, generation through the packaged
llama.cpp server over the OpenAI API, citation check) over the answerable questions of the pydocs set, once
per packaged model (`default` = Qwen2.5-Coder-1.5B, `fast` = 0.5B). The server is started and warmed up with
one question before timing; its KV cache then holds the fixed system prompt, as it would in the app.

    python -m benchmarks.answer                     # both variants, 12 questions each
    python -m benchmarks.answer --variants fast --limit 30

TTFT is what the user waits for: from the question to the first streamed token (retrieval included).
"""

from __future__ import annotations

import argparse
import json
import os
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

from benchmarks.answer_quality import QUESTIONS, WORKDIR, bench_settings, build_index, fetch_pydocs, load_questions  # noqa: E402

MODEL_NAMES = {"default": "qwen2.5-coder-1.5b-instruct", "fast": "qwen2.5-coder-0.5b-instruct"}
NODES = ("recall_memory", "rewrite_query", "retrieve", "rerank", "assess", "generate", "check_citations",
         "write_memory")


def pct(values: Sequence[float | None], p: int) -> float | None:
    """The p-th percentile (inclusive method), None when there are no values."""
    vals = sorted(v for v in values if v is not None)
    if not vals:
        return None
    if len(vals) == 1:
        return vals[0]
    return statistics.quantiles(vals, n=100, method="inclusive")[p - 1]


def time_variant(variant: str, questions: Sequence[dict[str, Any]], workdir: Path) -> dict[str, Any]:
    """Run the questions through the graph with one packaged model; per-question timings and a summary."""
    from graphs.engine import AnswerEngine
    from graphs.llm_server import stop_llm

    settings = bench_settings(workdir, llm_variant=variant, llm_model=MODEL_NAMES[variant], llm_port=8778)
    backend = build_index(settings, fetch_pydocs(workdir))
    rows: list[dict[str, Any]] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            engine = AnswerEngine(settings, backend, checkpointer_path=Path(tmp) / "bench.sqlite3")
            started = time.perf_counter()
            engine.ask("What is a list comprehension?", "warmup")
            warmup_s = time.perf_counter() - started
            for i, q in enumerate(questions):
                t0 = time.perf_counter()
                first: float | None = None
                answer = None
                for event in engine.stream(q.get("standalone") or q["question"], f"lat-{i}"):
                    if event.kind == "token" and first is None:
                        first = time.perf_counter()
                    elif event.kind == "final":
                        answer = event.answer
                    elif event.kind == "error":
                        raise RuntimeError(event.text)
                total = time.perf_counter() - t0
                assert answer is not None
                gen = answer.steps.get("generate") or {}
                row = {"id": q["id"], "covered": answer.covered, "ttft": first - t0 if first else None,
                       "total": total, "tokens": gen.get("tokens"), "tokens_per_s": gen.get("tokens_per_s"),
                       "prompt_chars": gen.get("prompt_chars"),
                       "nodes": {n: answer.steps.get("timings", {}).get(n) for n in NODES}}
                rows.append(row)
                print(f"{variant:<7} {q['id']:<16} ttft {row['ttft'] or 0:5.2f}s total {total:5.2f}s "
                      f"{row['tokens'] or 0:>3} tok {row['tokens_per_s'] or 0:5.1f} tok/s", file=sys.stderr, flush=True)
            engine.close()
    finally:
        stop_llm()
        backend.close()
    gen_rows = [r for r in rows if r["ttft"] is not None]
    summary: dict[str, Any] = {
        "variant": variant, "model": MODEL_NAMES[variant], "questions": len(rows), "generated": len(gen_rows),
        "warmup_s": round(warmup_s, 2), "llm_threads": settings.llm_threads,
    }
    for key in ("ttft", "total", "tokens_per_s"):
        vals = [r[key] for r in gen_rows]
        summary[f"{key}_p50"] = _r(pct(vals, 50))
        summary[f"{key}_p95"] = _r(pct(vals, 95))
    summary["nodes_p50"] = {n: _r(pct([r["nodes"][n] for r in gen_rows], 50)) for n in NODES}
    summary["nodes_p95"] = {n: _r(pct([r["nodes"][n] for r in gen_rows], 95)) for n in NODES}
    return {"summary": summary, "rows": rows}


def _r(x: float | None) -> float | None:
    return round(x, 3) if x is not None else None


def print_table(results: Sequence[dict[str, Any]]) -> None:
    """One line per variant, then per-node p50."""
    print(f"{'model':<30} {'n':>3} {'TTFT p50':>9} {'TTFT p95':>9} {'total p50':>10} {'total p95':>10} "
          f"{'tok/s p50':>10}")
    for res in results:
        s = res["summary"]
        print(f"{s['model']:<30} {s['generated']:>3} {s['ttft_p50'] or 0:>8.2f}s {s['ttft_p95'] or 0:>8.2f}s "
              f"{s['total_p50'] or 0:>9.2f}s {s['total_p95'] or 0:>9.2f}s {s['tokens_per_s_p50'] or 0:>10.1f}")
    print("\nper node, p50 / p95 seconds")
    print(f"{'node':<16}" + "".join(f"{r['summary']['variant']:>22}" for r in results))
    for n in NODES:
        cells = []
        for r in results:
            p50, p95 = r["summary"]["nodes_p50"][n], r["summary"]["nodes_p95"][n]
            cells.append(f"{p50:.3f} / {p95:.3f}" if p50 is not None else "—")
        print(f"{n:<16}" + "".join(f"{c:>22}" for c in cells))


def main(argv: list[str] | None = None) -> int:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=["fast", "default"], choices=sorted(MODEL_NAMES))
    parser.add_argument("--limit", type=int, default=12, help="answerable questions per variant")
    parser.add_argument("--workdir", type=Path, default=WORKDIR)
    parser.add_argument("--questions", type=Path, default=QUESTIONS)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "answer_latency.json")
    args = parser.parse_args(argv)

    questions = [q for q in load_questions(args.questions) if q["answerable"]][: args.limit]
    results = [time_variant(v, questions, args.workdir) for v in args.variants]
    print_table(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"load_avg_at_end": os.getloadavg(), "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
