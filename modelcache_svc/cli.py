"""The modelcache-svc command. The environment is read here and nowhere else."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from . import errors
from .config import Settings, flag_fields, setting_help

EXIT_USAGE = 2
EXIT_ERROR = 1


def _on_off(value: str) -> bool:
    if value.lower() in ("on", "true", "1", "yes"):
        return True
    if value.lower() in ("off", "false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"{value!r}: on or off")


def _serve_flags(p: argparse.ArgumentParser) -> None:
    """One flag per Settings field that is a flag: its help and default come from the field (config.py)."""
    for f in flag_fields():
        kwargs: dict[str, Any] = {"help": setting_help(f)}
        typ = f.type if isinstance(f.type, str) else f.type.__name__
        if typ in ("int", "float"):
            kwargs["type"] = int if typ == "int" else float
        elif typ == "bool":
            kwargs.update(type=_on_off, metavar="on|off")
        if f.metadata["choices"]:
            kwargs["choices"] = list(f.metadata["choices"])
        p.add_argument("--" + f.name.replace("_", "-"), **kwargs)


def _client_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--target", default=None, help="server address (default $MODELCACHE_TARGET or 127.0.0.1:50051)")
    p.add_argument("--api-key", "--key", default=None, help="key to send (default $MODELCACHE_API_KEY)")
    p.add_argument("--timeout", type=float, default=10.0)
    p.add_argument("--json", action="store_true", help="print JSON")


def _scope_flags(p: argparse.ArgumentParser, model_required: bool = True) -> None:
    p.add_argument("--tenant", default="default")
    p.add_argument("--model", required=model_required, default=None if model_required else "")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="modelcache-svc", description="A semantic cache for LLM products.")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the service")
    _serve_flags(serve)
    migrate = sub.add_parser("migrate", help="apply pending schema migrations and exit")
    _serve_flags(migrate)

    q = sub.add_parser("query", help="look a chat up")
    _client_flags(q)
    _scope_flags(q)
    q.add_argument("question", nargs="?", help="the user question (or use --messages)")
    q.add_argument("--messages", help='the chat as JSON: [{"role":"user","content":"..."}]')
    q.add_argument("--threshold", type=float, default=None)
    q.add_argument("--top-k", type=int, default=0)

    ins = sub.add_parser("insert", help="write an answer back")
    _client_flags(ins)
    _scope_flags(ins)
    ins.add_argument("question", nargs="?")
    ins.add_argument("answer")
    ins.add_argument("--messages", help="the chat as JSON instead of a question")
    ins.add_argument("--ttl", type=int, default=0)
    ins.add_argument("--meta", help='metadata as a JSON object of strings')
    ins.add_argument("--verifies", default="", help="the verify_entry_id of the miss this answer was fetched for")

    rm = sub.add_parser("remove", help="remove entries by id")
    _client_flags(rm)
    _scope_flags(rm)
    rm.add_argument("ids", nargs="+")

    fb = sub.add_parser("feedback", help="report that a served hit was WRONG or CORRECT")
    _client_flags(fb)
    _scope_flags(fb)
    fb.add_argument("entry_id")
    fb.add_argument("verdict", choices=["correct", "wrong"])
    fb.add_argument("question", nargs="?", help="the question it was served for (or use --messages)")
    fb.add_argument("--messages", help="the chat as JSON instead of a question")
    fb.add_argument("--answer", default="", help="with wrong: the right answer, cached for that chat")

    cl = sub.add_parser("clear", help="drop every entry of a model (or of the whole tenant)")
    _client_flags(cl)
    _scope_flags(cl, model_required=False)

    st = sub.add_parser("stats", help="entries, hit ratio, latency and top entries per model of a tenant")
    _client_flags(st)
    _scope_flags(st, model_required=False)
    st.add_argument("--window", type=int, default=3600, help="seconds of query log to summarise")
    st.add_argument("--top", type=int, default=5)

    ri = sub.add_parser("reindex", help="re-embed a tenant's entries with its current embedding model")
    _client_flags(ri)
    ri.add_argument("--tenant", required=True)

    rp = sub.add_parser("repair", help="make the vector store agree with the scalar store (orphans on either side)")
    _client_flags(rp)
    rp.add_argument("--tenant", default="", help="one tenant (default: all)")

    from .tools import policy as policy_tool

    tenant = sub.add_parser("tenant", help="manage tenants")
    tsub = tenant.add_subparsers(dest="tenant_command", required=True)
    for verb in ("create", "update"):
        t = tsub.add_parser(verb)
        _client_flags(t)
        t.add_argument("name")
        t.add_argument("--threshold", type=float, default=None, dest="similarity_threshold")
        t.add_argument("--ttl", type=int, default=None, dest="ttl_seconds")
        t.add_argument("--max-entries", type=int, default=None)
        t.add_argument("--eviction", choices=["lru", "lfu", "fifo"], default=None, dest="eviction_policy")
        t.add_argument("--embedding-model", default=None)
        t.add_argument("--max-error-rate", type=float, default=None,
                       help="learned per-entry thresholds: the wrong-hit rate accepted (docs/hit-quality.md)")
        t.add_argument("--verify-rate", type=float, default=None, help="share of uncertain hits verified (0..1)")
        t.add_argument("--verifier", type=_on_off, default=None, metavar="on|off",
                       help="the verifier for this tenant (default: the server's setting)")
        t.add_argument("--verifier-cutoff", type=float, default=None,
                       help="probability the verifier needs to serve a candidate (default: the model's fitted one)")
        t.add_argument("--cross-language", type=_on_off, default=None, metavar="on|off",
                       help="let an entry answer questions of another language (default off: each language its own)")
        policy_tool.add_policy_flags(t)
    for verb in ("get", "delete"):
        t = tsub.add_parser(verb)
        _client_flags(t)
        t.add_argument("name")
    t = tsub.add_parser("list")
    _client_flags(t)

    key = sub.add_parser("key", help="manage API keys")
    ksub = key.add_subparsers(dest="key_command", required=True)
    k = ksub.add_parser("create")
    _client_flags(k)
    k.add_argument("tenant")
    k = ksub.add_parser("revoke")
    _client_flags(k)
    k.add_argument("id")

    # Benchmarks and evaluation live in their own modules; each adds its verb.
    from modelcache_train import cli as train_cli

    from .tools import bench, bench_console, bench_scale, evaluation, repeat_bench

    bench.add_parser(sub)
    repeat_bench.add_parser(sub)
    bench_scale.add_parser(sub)
    bench_console.add_parser(sub)
    evaluation.add_parser(sub)
    train_cli.add_parser(sub)
    policy_tool.add_parser(sub)
    from .tools import online_eval

    online_eval.add_flags(sub.choices["eval"])  # eval --online
    from .tools import transfer_cli

    transfer_cli.add_parsers(sub, _client_flags)  # export, import
    return parser


def settings_from_args(args: argparse.Namespace, environ: dict[str, str]) -> Settings:
    names = {f.name for f in dataclasses.fields(Settings)}
    overrides = {k: v for k, v in vars(args).items() if k in names}
    return Settings.load(overrides, environ)


def setup_logging(level: str) -> None:
    from .logs import configure

    configure(level)


def _print(args: argparse.Namespace, value: Any, text: str) -> None:
    if getattr(args, "json", False):
        print(json.dumps(value, ensure_ascii=False, sort_keys=True))
    else:
        print(text)


def _chat(args: argparse.Namespace) -> Any:
    if args.messages:
        try:
            chat = json.loads(args.messages)
        except json.JSONDecodeError as exc:
            raise errors.InvalidArgument(f"--messages is not JSON: {exc}") from exc
        if not isinstance(chat, list):
            raise errors.InvalidArgument("--messages must be a JSON list of {role, content}")
        return chat
    if not args.question:
        raise errors.InvalidArgument("give a question or --messages")
    return args.question


def run_client(args: argparse.Namespace, environ: dict[str, str]) -> int:
    from .client import CacheClient

    target = args.target or environ.get("MODELCACHE_TARGET") or "127.0.0.1:50051"
    api_key = args.api_key or environ.get("MODELCACHE_API_KEY") or None
    with CacheClient(target, api_key=api_key, timeout=args.timeout) as client:
        if args.command == "query":
            hit = client.query(args.tenant, args.model, _chat(args), similarity_threshold=args.threshold, top_k=args.top_k)
            text = f"{hit.match} {hit.similarity:.3f} {hit.id}\n{hit.answer}" if hit.hit else "miss"
            if hit.verify_entry_id:
                text += f" (verify: write back with --verifies {hit.verify_entry_id})"
            if hit.uncacheable:
                text = f"miss: uncacheable ({hit.uncacheable})"
            _print(args, dataclasses.asdict(hit), text)
        elif args.command == "insert":
            meta = json.loads(args.meta) if args.meta else {}
            entry_id = client.insert(args.tenant, args.model, _chat(args), args.answer, ttl_seconds=args.ttl,
                                     metadata=meta, verifies=args.verifies)
            refused = getattr(entry_id, "uncacheable", "")
            _print(args, {"id": entry_id, "uncacheable": refused}, entry_id or f"not stored: uncacheable ({refused})")
        elif args.command == "remove":
            n = client.remove(args.tenant, args.model, args.ids)
            _print(args, {"removed": n}, f"removed {n}")
        elif args.command == "feedback":
            action = client.feedback(args.tenant, args.model, args.entry_id, _chat(args), args.verdict,
                                     answer=args.answer)
            _print(args, {"action": action}, action)
        elif args.command == "clear":
            n = client.clear(args.tenant, args.model or None)
            _print(args, {"removed": n}, f"removed {n}")
        elif args.command == "stats":
            scopes = client.stats(args.tenant, args.model or None, window_seconds=args.window, top=args.top)
            lines = [
                f"{s['tenant']}/{s['model']}\tentries={s['entries']}\tqueries={s['queries']}"
                f"\thit_ratio={s['hit_ratio']:.3f}\tp50={s['p50_latency_ms']:.2f}ms\tp99={s['p99_latency_ms']:.2f}ms"
                for s in scopes
            ]
            _print(args, scopes, "\n".join(lines) or "no entries and no queries")
        elif args.command == "reindex":
            n = client.reindex(args.tenant)
            _print(args, {"tenant": args.tenant, "reindexed": n}, f"reindexed {n} entries of {args.tenant}")
        elif args.command == "repair":
            report = client.repair(args.tenant or None)
            _print(args, report, ", ".join(f"{k}={v}" for k, v in report.items()))
        elif args.command == "tenant":
            _tenant_verb(args, client)
        elif args.command == "key":
            if args.key_command == "create":
                key_id, key = client.create_api_key(args.tenant)
                _print(args, {"id": key_id, "key": key, "tenant": args.tenant}, f"id {key_id}\nkey {key}  (shown once)")
            else:
                client.revoke_api_key(args.id)
                _print(args, {"revoked": args.id}, f"revoked {args.id}")
    return 0


def _tenant_verb(args: argparse.Namespace, client: Any) -> None:
    verb = args.tenant_command
    config_names = ("similarity_threshold", "ttl_seconds", "max_entries", "eviction_policy", "embedding_model",
                    "max_error_rate", "verify_rate", "verifier", "verifier_cutoff", "cross_language")
    if verb in ("create", "update"):
        config = {k: getattr(args, k) for k in config_names if getattr(args, k) is not None}
        from .tools import policy as policy_tool

        if policy_tool.policy_flags_given(args):
            current = client.get_tenant(args.name).cacheability if verb == "update" else None
            config["cacheability"] = policy_tool.policy_from_flags(args, current)
        tenant = client.create_tenant(args.name, **config) if verb == "create" else client.update_tenant(args.name, **config)
        _print(args, dataclasses.asdict(tenant), _tenant_line(tenant))
    elif verb == "get":
        tenant = client.get_tenant(args.name)
        _print(args, dataclasses.asdict(tenant), _tenant_line(tenant))
    elif verb == "list":
        tenants = client.list_tenants()
        _print(args, [dataclasses.asdict(t) for t in tenants], "\n".join(_tenant_line(t) for t in tenants))
    elif verb == "delete":
        n = client.delete_tenant(args.name)
        _print(args, {"deleted": args.name, "removed": n}, f"deleted {args.name} ({n} entries)")


def _tenant_line(t: Any) -> str:
    threshold = "default" if t.similarity_threshold is None else f"{t.similarity_threshold:.3f}"
    return (
        f"{t.name}\tentries={t.entries}\tthreshold={threshold}\tttl={t.ttl_seconds}"
        f"\tmax_entries={t.max_entries}\teviction={t.eviction_policy}"
        + (f"\tcacheability: {_policy_line(t.cacheability)}" if getattr(t, "cacheability", None) else "")
    )


def _policy_line(policy: Any) -> str:
    from .tools.policy import policy_summary

    return policy_summary(policy)


# The process's own defaults, set once at the entry point before anything imports huggingface_hub or
# tokenizers (both read them at import): models load from packages and the local cache, never the network,
# and tokenizers does not warn about forks. An operator's own value wins.
PROCESS_ENV_DEFAULTS = {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def main(argv: Sequence[str] | None = None) -> int:
    for name, value in PROCESS_ENV_DEFAULTS.items():
        os.environ.setdefault(name, value)
    environ = dict(os.environ)
    args = build_parser().parse_args(argv)
    try:
        if args.command in ("serve", "migrate"):
            settings = settings_from_args(args, environ)
            setup_logging(settings.log_level)
            if args.command == "migrate":
                return _migrate(settings)
            from .app import serve

            asyncio.run(serve(settings))
            return 0
        if args.command == "bench-repeat":
            from .tools import repeat_bench

            return repeat_bench.run(args, environ)
        if args.command == "policy-eval":
            from .tools import policy as policy_tool

            return policy_tool.run(args, environ)
        if args.command == "bench-scale":
            from .tools import bench_scale

            return bench_scale.run(args, environ)
        if args.command == "bench-console":
            from .tools import bench_console

            return bench_console.run(args, environ)
        if args.command in ("bench", "eval"):
            from .tools import bench, evaluation

            if args.command == "eval" and args.online:
                from .tools import online_eval

                return online_eval.run(args, environ)
            module = bench if args.command == "bench" else evaluation
            return module.run(args, environ)
        if args.command in ("export", "import"):
            from .tools import transfer_cli

            return transfer_cli.run(args, environ)
        if args.command == "train":
            from modelcache_train import cli as train_cli

            return train_cli.run(args, list(argv) if argv is not None else sys.argv[1:])
        return run_client(args, environ)
    except errors.CacheError as exc:
        code = getattr(exc, "code", None)
        label = code.name if code is not None else type(exc).__name__
        print(f"error: {label}: {exc.message}", file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, errors.InvalidArgument) else EXIT_ERROR
    except KeyboardInterrupt:
        return 130


def _migrate(settings: Settings) -> int:
    from .stores import open_scalar_store

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = open_scalar_store(settings.resolved_scalar_uri, settings.namespace, timeout=settings.store_timeout_s)
    try:
        applied = store.migrate()
    finally:
        store.close()
    print(f"applied migrations: {applied}" if applied else "schema is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
