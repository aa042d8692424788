"""``mdeploy rollout | status | rollback | promote | history``: traffic between model versions."""

from __future__ import annotations

import argparse
import json
from typing import Any
from urllib.parse import quote

from rich import box
from rich.table import Table

from core.errors import InvalidInput
from mdeploy.cli.output import table_console
from mdeploy.cli.registry_client import add_gateway_arguments, connect

DEPLOYMENTS_PATH = "/v1/admin/deployments"
AUDIT_PATH = "/v1/admin/audit"
POLICIES = ("pinned", "canary", "shadow", "epsilon-greedy", "ucb1", "thompson")


def _path(model: str, action: str = "") -> str:
    return f"{DEPLOYMENTS_PATH}/{quote(model, safe='')}" + (f"/{action}" if action else "")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="NAME", help="the model's name, as `mdeploy list` shows it")
    add_gateway_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def register(subparsers: Any) -> None:
    rollout = subparsers.add_parser(
        "rollout",
        help="route a model's traffic with a policy",
        description="Start a rollout: pinned, canary (--weights), shadow (--candidate), or a bandit "
        "(epsilon-greedy, ucb1, thompson) that learns from feedback. A guard rolls a candidate back "
        "when its error rate or p99 latency is worse than the stable version's.",
    )
    _common(rollout)
    rollout.add_argument(
        "--policy", required=True, choices=POLICIES, help="how requests that name no version pick one"
    )
    rollout.add_argument("--versions", required=True, help="comma-separated versions (arms), e.g. 3,4")
    rollout.add_argument("--weights", help="canary: comma-separated weights in --versions order, e.g. 90,10")
    rollout.add_argument("--candidate", help="shadow: the version that gets copies of the traffic")
    rollout.add_argument("--epsilon", type=float, help="epsilon-greedy: exploration rate (default 0.1)")
    rollout.add_argument("--min-pulls", type=int, help="bandits: pulls each arm gets before exploiting")
    rollout.add_argument("--warmup", type=int, help="bandits: first N decisions uniform")
    rollout.add_argument("--prior", help="thompson: Beta prior as ALPHA,BETA (default 1,1)")
    rollout.add_argument("--shadow-share", type=float, help="shadow: share of requests copied (default 1)")
    rollout.add_argument(
        "--auto-reward-ms",
        type=float,
        help="bandits: reward each request by itself, 1 when it succeeds within this latency, else 0",
    )
    rollout.add_argument(
        "--max-error-rate-delta", type=float, help="guard: candidate error rate over baseline"
    )
    rollout.add_argument("--max-p99-ratio", type=float, help="guard: candidate p99 / baseline p99")
    rollout.add_argument("--min-requests", type=int, help="guard: requests per version before judging")
    rollout.add_argument("--no-guard", action="store_true", help="no automatic rollback for this rollout")
    rollout.add_argument("--reason", default="", help="why (kept in the audit log)")
    rollout.set_defaults(handler=run_rollout)

    status = subparsers.add_parser(
        "status",
        help="what serves a model: arms, traffic, rewards, errors, latency, guard",
        description="Show what serves a model and how each version (arm) does since the rollout "
        "began: its configured weight, requests in the last minute and since the start, share, error "
        "rate, p50/p99 latency, mean reward with its 95%% interval; each candidate's reward difference "
        "from the stable version with its interval and p-value; a shadow's agreement and latency "
        "difference; the staged versions; and the guard's state.",
    )
    _common(status)
    status.set_defaults(handler=run_status)

    rollback = subparsers.add_parser(
        "rollback",
        help="return to what served before the last change (or --to)",
        description="Undo the last change that moved traffic (a promotion, a rollout, a rollback --to): "
        "what served before it serves again, at once. With --to VERSION, that version alone takes all "
        "requests that name no version (itself undone by the next rollback). Recorded in the audit "
        "log with --reason.",
    )
    _common(rollback)
    rollback.add_argument("--to", metavar="VERSION", help="the version to serve instead of the stable one")
    rollback.add_argument("--reason", default="", help="why (kept in the audit log)")
    rollback.set_defaults(handler=run_rollback)

    promote = subparsers.add_parser(
        "promote",
        help="make a staged version live",
        description="Make VERSION live: it takes all requests to NAME that name no version, and later "
        "rollouts measure against it. `mdeploy rollback NAME` undoes it.",
    )
    _common(promote)
    promote.add_argument("version", metavar="VERSION", help="the version number to make stable")
    promote.add_argument("--reason", default="", help="why (kept in the audit log)")
    promote.set_defaults(handler=run_promote)

    history = subparsers.add_parser(
        "history",
        help="the audit log: pushes, deletes, traffic changes, keys",
        description="Changes, newest first: who, when, what, from what, to what, and why. NAME "
        "narrows it to one model; --actor and --kind to one actor or kind of change.",
    )
    history.add_argument(
        "model", metavar="NAME", nargs="?", help="the model's name, as `mdeploy list` shows it (default: all)"
    )
    add_gateway_arguments(history)
    history.add_argument("--json", action="store_true", help="print JSON instead of a table")
    history.add_argument("--actor", help="only changes by this actor, e.g. key:1a2b3c4d5e6f7a8b")
    history.add_argument(
        "--kind",
        help="only this kind of change: push, restore, delete, go-live, promote, rollout, rollback, "
        "auto-rollback, repoint, key-create, key-revoke, key-expire",
    )
    history.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")
    history.set_defaults(handler=run_history)


def _numbers(text: str, what: str) -> list[str]:
    parts = [part.strip() for part in text.split(",") if part.strip()]
    if not parts or not all(part.isdecimal() for part in parts):
        raise InvalidInput(f"{what} must be comma-separated version numbers, e.g. 3,4 (not {text!r})")
    return parts


def _floats(text: str, what: str, count: int) -> list[float]:
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        raise InvalidInput(f"{what} must be comma-separated numbers, e.g. 90,10 (not {text!r})") from None
    if len(values) != count:
        raise InvalidInput(f"{what} needs {count} numbers, one per version")
    return values


def policy_body(args: argparse.Namespace) -> dict[str, Any]:
    versions = _numbers(args.versions, "--versions")
    policy: dict[str, Any] = {"kind": args.policy, "versions": versions}
    if args.weights:
        policy["weights"] = dict(
            zip(versions, _floats(args.weights, "--weights", len(versions)), strict=True)
        )
    if args.candidate:
        policy["candidate"] = args.candidate
    if args.prior:
        policy["prior_alpha"], policy["prior_beta"] = _floats(args.prior, "--prior", 2)
    for name in ("epsilon", "min_pulls", "warmup", "shadow_share"):
        if getattr(args, name) is not None:
            policy[name] = getattr(args, name)
    if args.auto_reward_ms is not None:
        policy["auto_reward_latency_ms"] = args.auto_reward_ms
    guard = {
        name: getattr(args, name)
        for name in ("max_error_rate_delta", "max_p99_ratio", "min_requests")
        if getattr(args, name) is not None
    }
    if args.no_guard:
        guard["enabled"] = False
    return {"policy": policy, "guard": guard, "reason": args.reason}


def _show(args: argparse.Namespace, status: dict[str, Any]) -> int:
    if args.json:
        print(json.dumps(status, indent=2, sort_keys=True))
    else:
        console = table_console()
        console.print(status_table(status))
        for line in comparison_lines(status):
            console.print(line, highlight=False, markup=False)
    return 0


def run_rollout(args: argparse.Namespace) -> int:
    with connect(args) as client:
        return _show(args, client.request("PUT", _path(args.model), json=policy_body(args)).json())


def run_status(args: argparse.Namespace) -> int:
    with connect(args) as client:
        return _show(args, client.get_json(_path(args.model)))


def run_rollback(args: argparse.Namespace) -> int:
    with connect(args) as client:
        return _show(
            args, client.post_json(_path(args.model, "rollback"), {"to": args.to, "reason": args.reason})
        )


def run_promote(args: argparse.Namespace) -> int:
    body = {"version": args.version, "reason": args.reason}
    with connect(args) as client:
        return _show(args, client.post_json(_path(args.model, "promote"), body))


def run_history(args: argparse.Namespace) -> int:
    if not 1 <= args.limit <= 1000:
        raise InvalidInput(f"--limit must be between 1 and 1000, not {args.limit}")
    query = {"model": args.model, "actor": args.actor, "action": args.kind, "limit": args.limit}
    with connect(args) as client:
        params = {name: str(value) for name, value in query.items() if value is not None}
        events: list[dict[str, Any]] = client.get_json(AUDIT_PATH, params=params)["events"]
    if args.json:
        print(json.dumps(events, indent=2, sort_keys=True))
        return 0
    table = Table(box=box.SIMPLE_HEAD, title="history" + (f" of {args.model}" if args.model else ""))
    table.add_column("when (UTC)", no_wrap=True)
    for column in ("who", "action", "model", "version", "from", "to", "why"):
        table.add_column(column, overflow="fold")
    for e in events:
        when = (e["at"] or "")[:19].replace("T", " ")
        subject = e["model"] or (f"key {e['details'].get('key_id', '')}" if "key_id" in e["details"] else "")
        table.add_row(
            when,
            e["actor"],
            e["action"],
            subject,
            e["version"] or "",
            e["from"] or "",
            e["to"] or "",
            e["reason"],
        )
    table_console().print(table)
    return 0


def _fmt(value: float | None, pattern: str) -> str:
    return "-" if value is None else pattern.format(value)


def _arm_name(arm: dict[str, Any]) -> str:
    return f"{arm['version']} ({arm['role']})"


def status_table(status: dict[str, Any]) -> Table:
    """One row per arm: which version is winning should be visible at a glance."""
    serving = status["serving"]
    title = f"{status['model']}: {serving['summary']}"
    if serving["staged"]:
        title += f"; staged: {', '.join(serving['staged'])}"
    table = Table(box=box.SIMPLE_HEAD, title=title)
    columns = (
        "version",
        "weight",
        "last min",
        "since start",
        "share",
        "errors",
        "p50 ms",
        "p99 ms",
        "reward (95% CI)",
    )
    for column in columns:
        table.add_column(column, justify="right", overflow="fold")
    arms = status["arms"]
    best = max((a["mean_reward"] or 0.0 for a in arms), default=0.0)
    for arm in arms:
        ci = arm["reward_ci95"]
        reward = "-" if arm["mean_reward"] is None else f"{arm['mean_reward']:.3f}"
        if ci:
            reward += f" [{ci[0]:.3f}, {ci[1]:.3f}] n={arm['rewards']}"
        marker = (
            " ★" if arm["mean_reward"] is not None and arm["mean_reward"] == best and arm["rewards"] else ""
        )
        table.add_row(
            _arm_name(arm) + marker,
            _fmt(arm["weight"], "{:.0%}") if arm["weight"] is not None else "learned",
            str(arm["requests_last_minute"]),
            str(arm["pulls"]),
            _fmt(arm["traffic_share"], "{:.1%}"),
            _fmt(arm["error_rate"], "{:.1%}"),
            _fmt(arm["p50_ms"], "{:.1f}"),
            _fmt(arm["p99_ms"], "{:.1f}"),
            reward,
        )
    return table


def comparison_lines(status: dict[str, Any]) -> list[str]:
    """Below the table: reward differences, the shadow's agreement, the guard, what rollback does."""
    lines = [
        f"reward {d['candidate']} - {d['stable']}: {d['difference']:+.3f} "
        f"[{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}], p = {d['p_value']:.3g}"
        for d in status["reward_differences"]
    ]
    shadow = status.get("shadow")
    if shadow:
        rate = _fmt(shadow["agreement_rate"], "{:.1%}")
        delta = _fmt(shadow["latency_delta_p50_ms"], "{:+.2f} ms")
        lines.append(
            f"shadow {shadow['version']}: agreed {rate} of {shadow['agreed'] + shadow['differed']} compared "
            f"copies ({shadow['failed']} failed); latency vs the answer, median {delta}"
        )
    guard = status["guard"]
    lines.append(
        f"guard: {guard['state']}" + (f"; {guard['last_rollback']}" if guard["last_rollback"] else "")
    )
    for arms in status.get("arms_drift", []):
        lines.append(arms_drift_line(arms))
    back = status.get("can_roll_back_to")
    lines.append(f"rollback returns to: {back}" if back else "rollback: nothing before this")
    return lines


def arms_drift_line(arms: dict[str, Any]) -> str:
    """A candidate's live traffic against the stable version's: its most drifted feature."""
    head = f"drift {arms['candidate']} vs {arms['stable']} (last {arms['window']}): "
    if arms["status"] == "no traffic":
        return head + f"not enough traffic yet ({arms['stable_rows']} / {arms['candidate_rows']} rows)"
    parts = [f"{arms['status'].upper()}, {arms['drifted_share'] or 0:.0%} of features drifted"]
    if arms["features"]:
        top = arms["features"][0]
        parts.append(f"most: {top['name']} ({top['side']}) PSI {top['psi']:.3f}, KS {top['ks']:.3f}")
    if arms["classes_js"] is not None:
        parts.append(f"classes JS {arms['classes_js']:.3f}")
    return head + "; ".join(parts)
