"""``vmem eval`` and ``vmem bench``: measurements, each beside its baseline.

``eval locomo``: LoCoMo retrieval recall@k beside the paper's DRAGON figures; ``eval qa``: LoCoMo
answers' F1, vmem beside truncation and RAG, on any server; ``bench``: every benchmark suite of a
checkout in one table. Registered with :func:`vmem.app.commands.command` when :mod:`vmem.app.cli`
imports this module.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from vmem.app.commands import (
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    command,
    server_of,
)

# ---------------------------------------------------------------------- eval


def _eval_args(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="benchmark", metavar="BENCHMARK", required=True)
    loc = sub.add_parser(
        "locomo", help="LoCoMo retrieval: recall@k of evidence turns",
        description="Store every turn of each LoCoMo conversation as a page, search with each question, and "
                    "report recall@k of the evidence turns per question category and overall, beside the "
                    "LoCoMo paper's DRAGON retriever (Table 3: R@5 58.8, R@10 67.5, R@25 79.9).")
    loc.add_argument("path", metavar="PATH", nargs="?", default=None,
                     help="a LoCoMo JSON file (default: ../shared/data/locomo/locomo_dev.json from the "
                          "current directory)")
    loc.add_argument("--json", action="store_true",
                     help='print {mode: {"overall": {"5": r, ...}, "by_category": {category: {"5": r, ...}}}} '
                          "with recall as a fraction")
    loc.add_argument("--modes", default="text,vector,hybrid",
                     help="comma-separated retrieval modes (default text,vector,hybrid; also rrf and MODE+context)")
    loc.add_argument("--no-progress", action="store_true", help="no progress bar (it goes to stderr)")
    qa = sub.add_parser(
        "qa", help="LoCoMo question answering: F1 of a real model's answers, vmem beside truncation and RAG",
        description="Ask a model LoCoMo's questions about each conversation, side by side: (a) the whole "
                    "conversation in the prompt, (b) the newest turns that fit --window, (c) top-k retrieval "
                    "into that window, (d) the vmem agent with its memory functions, (e) vmem with prefetch "
                    "only, (f) vmem after its consolidation daemon. Scored with the LoCoMo paper's token F1, per "
                    "question category; prompt tokens and seconds per question. The conversation goes into "
                    "vmem without model calls (an extractive summarizer writes the flushes' summaries); the "
                    "model answers the questions only. See vmem.app.qa for the protocol.",
        epilog="example: vmem eval qa --base-url http://127.0.0.1:8080/v1 --model qwen --configs b,c,d,e "
               "--limit 20 --window 4096")
    qa.add_argument("path", metavar="PATH", nargs="?", default=None,
                    help="a LoCoMo JSON file (default: ../shared/data/locomo/locomo_dev.json)")
    qa.add_argument("--base-url", help="the OpenAI-compatible server (default: $VMEM_BASE_URL, then "
                                       "$OPENAI_BASE_URL); the key comes from $VMEM_API_KEY or $OPENAI_API_KEY")
    qa.add_argument("--model", help="the model name to send (default: $VMEM_MODEL)")
    qa.add_argument("--tool-mode", choices=("auto", "native", "json"), default=None,
                    help="how the agent's tools reach the model (default: $VMEM_TOOL_MODE or auto)")
    qa.add_argument("--merge-system", action="store_true",
                    help="one leading system message and the question last, the memory's later system messages "
                         "(statistics, working set) just before it: for small models (see OpenAIDriver)")
    qa.add_argument("--configs", default="a,b,c,d,e,f",
                    help="comma-separated configurations, letters a-f (default all)")
    qa.add_argument("--window", type=int, default=4096, help="the context window of (b)-(f), tokens (default 4096)")
    qa.add_argument("--reserve", type=int, default=512, help="tokens kept free for the answer (default 512)")
    qa.add_argument("--limit", type=int, default=None,
                    help="a fixed random sample of this many questions, spread across the categories (--seed)")
    qa.add_argument("--questions", default=None, help="comma-separated question ids <sample_id>:<index>")
    qa.add_argument("--conversations", default=None, help="comma-separated sample ids (e.g. conv-26,conv-30)")
    qa.add_argument("--categories", default=None, help="comma-separated categories 1-5 (1 multi-hop, 2 temporal, "
                                                       "3 open-domain, 4 single-hop, 5 adversarial)")
    qa.add_argument("--seed", type=int, default=0, help="the sample's and the adversarial options' seed (default 0)")
    qa.add_argument("--rag-k", type=int, default=0, help="turns retrieved for (c); 0 fills the window (default)")
    qa.add_argument("--prefetch", type=int, default=10, help="pages prefetched per question for (e) (default 10)")
    qa.add_argument("--workset", type=int, default=0,
                    help="working-set tokens for (e); 0: a third of the window (default)")
    qa.add_argument("--max-steps", type=int, default=4, help="LLM calls per question for the agent (default 4)")
    qa.add_argument("--answer-tokens", type=int, default=32, help="max tokens of an answer (default 32)")
    qa.add_argument("--agent-tokens", type=int, default=256,
                    help="max tokens of one LLM call of the agent, which writes tool calls (default 256)")
    qa.add_argument("--timeout", type=float, default=1800.0,
                    help="seconds to wait for one LLM call (default 1800: a CPU reading a long prompt is slow)")
    qa.add_argument("--json", action="store_true",
                    help="print the whole report as strict JSON: settings, per configuration its overall and "
                         "per-category figures, and every question's outcome")
    qa.add_argument("--log", metavar="FILE", type=Path, default=None,
                    help="append each question's outcome to FILE as a JSON line as soon as it is scored "
                         "(a long run's partial results)")
    progress = qa.add_mutually_exclusive_group()
    progress.add_argument("--progress", dest="progress", action="store_true", default=None,
                          help="a progress bar on stderr (default: when stderr is a terminal)")
    progress.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


@command("eval", "evaluations (LoCoMo retrieval recall@k; LoCoMo question answering)",
         "Evaluate vmem on a benchmark's data: retrieval (locomo), answers end to end (qa). The data is not "
         "part of the repository.",
         _eval_args)
def _eval(args: argparse.Namespace) -> int:
    from vmem.app.evaluation import DEFAULT_LOCOMO_PATH, PAPER_DRAGON, evaluate_locomo, format_report

    if args.benchmark == "qa":
        return _eval_qa(args)
    path = Path(args.path) if args.path else DEFAULT_LOCOMO_PATH
    if not path.is_file():
        raise CliError(f"no LoCoMo file at {path}: pass its path (the data is not in the repository: LoCoMo's "
                       "data/locomo10.json from github.com/snap-research/LoCoMo, CC BY-NC 4.0)", EXIT_USAGE)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    ks = (5, 10, 25)
    try:
        result = evaluate_locomo(path, modes, ks, progress=not args.no_progress)
    except ValueError as exc:
        if "mode" in str(exc):
            raise CliError(f"--modes: {exc}", EXIT_USAGE) from None
        raise CliError(f"{path} is not a LoCoMo file: {exc}") from None
    except (KeyError, TypeError, AttributeError, IndexError) as exc:
        raise CliError(f"{path} is not a LoCoMo file: missing or malformed {exc}") from None
    if args.json:
        shaped = {m: {"overall": r["overall"], "by_category": r["by_category"]} for m, r in result.items()}
        print(json.dumps(shaped, indent=2))
        return EXIT_OK
    first: dict[str, Any] = next(iter(result.values()), {})
    print(f"LoCoMo retrieval, {path}: {first.get('questions', 0)} questions with evidence; recall@k of the "
          f"evidence turns, percent")
    print(format_report(result, reference={k: PAPER_DRAGON[k] for k in ks}))
    return EXIT_OK


def _csv(text: str | None) -> list[str] | None:
    return None if text is None else [t.strip() for t in text.split(",") if t.strip()]


def _eval_qa(args: argparse.Namespace) -> int:
    from vmem.app.evaluation import DEFAULT_LOCOMO_PATH
    from vmem.app.qa import CONFIGS, QASettings, format_qa_report, load_dialogues, run_qa, select_items
    from vmem.kernel.drivers import OpenAIDriver, RetryPolicy

    model, base_url = server_of(args)
    path = Path(args.path) if args.path else DEFAULT_LOCOMO_PATH
    if not path.is_file():
        raise CliError(f"no LoCoMo file at {path} (the data is not in the repository: pass its path)", EXIT_USAGE)
    configs = _csv(args.configs) or []
    bad = [c for c in configs if c not in CONFIGS]
    if bad or not configs:
        raise CliError(f"--configs: {', '.join(bad) or 'none given'}: choose among {', '.join(CONFIGS)}", EXIT_USAGE)
    try:
        settings = QASettings(window=args.window, reserve=args.reserve, answer_tokens=args.answer_tokens,
                              agent_tokens=args.agent_tokens, max_steps=args.max_steps, rag_k=args.rag_k, prefetch=args.prefetch,
                              workset=args.workset, seed=args.seed, merge_system=args.merge_system)
    except ValueError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    try:
        dialogues = load_dialogues(path)
    except (ValueError, KeyError, TypeError, AttributeError, IndexError) as exc:
        raise CliError(f"{path} is not a LoCoMo file: {exc}") from None
    try:
        categories = [int(c) for c in _csv(args.categories) or []] if args.categories else None
    except ValueError:
        raise CliError(f"--categories: {args.categories!r}: give numbers 1-5, comma-separated", EXIT_USAGE) from None
    try:
        items = select_items(dialogues, conversations=_csv(args.conversations), questions=_csv(args.questions),
                             categories=categories, limit=args.limit, seed=args.seed)
    except ValueError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    if not items:
        raise CliError("no question selected", EXIT_USAGE)

    def make_driver(max_tokens: int) -> OpenAIDriver:
        return OpenAIDriver(model, base_url=base_url, tool_mode=args.tool_mode, timeout=args.timeout,
                            retry=RetryPolicy(max_attempts=2), params={"max_tokens": max_tokens, "temperature": 0},
                            merge_system=settings.merge_system)

    progress = sys.stderr.isatty() if args.progress is None else args.progress
    with contextlib.ExitStack() as stack:
        log = None
        if args.log is not None:
            try:
                log = stack.enter_context(open(args.log, "a", encoding="utf-8"))
            except OSError as exc:
                raise CliError(f"--log {args.log}: {exc.strerror or exc}", EXIT_USAGE) from None

        def keep(outcome: Any) -> None:
            if log is not None:
                log.write(json.dumps(dataclasses.asdict(outcome), allow_nan=False) + "\n")
                log.flush()

        report = run_qa(dialogues, items, configs, settings, make_driver, progress=progress, on_outcome=keep)
    if args.json:
        print(json.dumps(report.to_dict(), indent=1, allow_nan=False))
        return EXIT_OK
    convs = sorted({i.conversation for i in items})
    print(f"LoCoMo QA, {path}: {len(items)} questions from {', '.join(convs)}; model {model}; window "
          f"{settings.window}; F1 percent by category (questions), prompt tokens and seconds per question; "
          f"{report.seconds:.0f} s in all")
    print(format_qa_report(report))
    return EXIT_OK


# ---------------------------------------------------------------------- bench


def _bench_args(p: argparse.ArgumentParser) -> None:
    from vmem.app.benchrun import SUITES

    p.add_argument("--quick", action="store_true", help="a smaller run: fewer sizes and rounds of every suite")
    p.add_argument("--json", action="store_true",
                   help='print a JSON list, one object a figure: {"name", "value", "unit", "baseline", '
                        '"ratio", "target", "met"}')
    p.add_argument("--only", metavar="SUITE", action="append", choices=[s.name for s in SUITES],
                   help="run only this suite (repeatable): " + ", ".join(s.name for s in SUITES))
    p.add_argument("--bench-dir", metavar="DIR", help="the checkout's bench/ folder (default: ./bench)")
    p.add_argument("--locomo", metavar="FILE", help="LoCoMo's data for the search, page-fault and retrieval suites "
                                                   "(default: ../shared/data/locomo/locomo_dev.json beside the checkout)")
    p.add_argument("--nested-kv", metavar="DIR", help="MemGPT's nested key-value data for the nested-kv suite "
                                                     "(default: ../shared/data/nested_kv beside the checkout)")


@command("bench", "run every benchmark and print one table (each figure beside its same-run baseline)",
         "Run the benchmark suites of a source checkout (bench/): the C core against its pure-Python "
         "reference, HNSW page-in against exact search, storage, LoCoMo retrieval, the kernel's per-step "
         "overhead against a naive kernel, and the nested key-value workload. Each figure is printed with "
         "its baseline measured in the same run, the ratio, the target and whether it is met. How long it "
         "takes depends on the data present: LoCoMo's suites (search, page-fault, retrieval) and nested-kv "
         "are most of it, and are skipped, saying which option gives their data, when it is absent. "
         "--quick runs fewer sizes and rounds of every suite.",
         _bench_args)
def _bench(args: argparse.Namespace) -> int:
    from vmem.app.benchrun import find_bench_dir, print_table, run_suites

    try:
        bench_dir = find_bench_dir(args.bench_dir)
    except FileNotFoundError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    figures = run_suites(bench_dir, quick=args.quick, only=set(args.only or ()),
                         data={"locomo": args.locomo, "nested-kv": args.nested_kv})
    if args.json:
        print(json.dumps(figures, indent=1, allow_nan=False))  # strict JSON: null, never NaN
    else:
        print_table(figures)
    failed = [f["name"] for f in figures if f["name"].endswith("suite failed")]
    return EXIT_FAILURE if failed else EXIT_OK  # unmet targets are reported, not failures
