"""Reports of LLM runs: ``report.json`` (every number and every generation), ``report.md`` (tables to read)
and PNG plots (attack success against eps; training curves)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from advfast.runtime.files import atomic_write, atomic_write_text

REPORT_JSON = "report.json"
REPORT_MD = "report.md"


def write_report(folder: str | Path, document: Mapping[str, Any]) -> dict[str, Path]:
    """``document`` (``title``, and any of ``clean``, ``attacks``, ``utility``, ``training``, ``config``) as
    report.json, report.md and, with embedding attacks at two radii or more, attack_success.png."""
    folder = Path(folder)
    try:
        text = json.dumps(document, indent=2, allow_nan=True)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"a report must hold JSON values only: {exc}") from None
    paths = {"json": atomic_write_text(folder / REPORT_JSON, text + "\n")}
    embedding = [row for row in document.get("attacks", []) if row["attack"] == "embedding" and row["eps"] is not None]
    if len({row["eps"] for row in embedding}) >= 2:
        paths["png"] = _success_plot(embedding, folder / "attack_success.png", str(document.get("title", "")))
    paths["md"] = atomic_write_text(folder / REPORT_MD, markdown(document))
    return paths


def markdown(document: Mapping[str, Any]) -> str:
    lines = [f"# {document.get('title', 'LLM evaluation')}", ""]
    if "model" in document:
        lines += [
            f"Model: `{document['model']}`; task: `{document.get('task', {}).get('name', '?')}` "
            f"(seed {document.get('task', {}).get('seed', '?')}); split: {document.get('split', 'test')}.",
            "",
        ]
    clean = document.get("clean")
    if clean:
        lines += [
            "## Without an attack",
            "",
            "| prompts | leak rate | refusal rate |",
            "|---|---|---|",
            f"| {clean['examples']} | {_pct(clean['leak_rate'])} | {_pct(clean['refusal_rate'])} |",
            "",
        ]
    attacks = document.get("attacks") or []
    if attacks:
        lines += [
            "## Attack success (the secret in the generation)",
            "",
            "| attack | eps | steps | prompts | success | stopped early | mean steps | seconds |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for row in attacks:
            eps = "-" if row["eps"] is None else f"{row['eps']:g}"
            norm = row.get("config", {}).get("norm", "")
            name = f"{row['attack']} ({norm})" if norm else row["attack"]
            lines.append(
                f"| {name} | {eps} | {row['steps']} | {row['examples']} | {_pct(row['success_rate'])} | "
                f"{_pct(row['early_stop_rate'])} | {row['mean_steps']:.1f} | {row['seconds']:.0f} |"
            )
        lines.append("")
    utility = document.get("utility")
    if utility:
        lines += [
            "## Utility on benign prompts (against the original model's answers)",
            "",
            "| prompts | exact agreement | word F1 | reference loss | leak rate | refusal rate |",
            "|---|---|---|---|---|---|",
            f"| {utility['examples']} | {_pct(utility['agreement'])} | {utility['word_f1']:.3f} | "
            f"{utility['reference_loss']:.3f} | {_pct(utility['leak_rate'])} | {_pct(utility['refusal_rate'])} |",
            "",
        ]
    training = document.get("training")
    if training:
        lines += ["## Training", ""]
        lines += [f"- {key}: {value}" for key, value in training.items()]
        lines.append("")
    return "\n".join(lines)


def _pct(value: float | None) -> str:
    return "-" if value is None or value != value else f"{value:.1%}"


def _success_plot(rows: Sequence[Mapping[str, Any]], path: Path, title: str) -> Path:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.0, 4.0), layout="constrained")
    ax = figure.add_subplot()
    by_steps: dict[int, list[tuple[float, float]]] = {}
    for row in rows:
        by_steps.setdefault(row["steps"], []).append((row["eps"], row["success_rate"]))
    for steps, points in sorted(by_steps.items()):
        points.sort()
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=f"embedding, {steps} steps")
    ax.set_xlabel("eps (relative to the mean embedding norm)")
    ax.set_ylabel("attack success rate")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    if title:
        ax.set_title(title)
    return atomic_write(path, lambda file: figure.savefig(file, format="png", dpi=120))


def write_run_report(trainer: Any) -> dict[str, Path]:
    """The report of a finished training run, in its folder: on the first ``eval_limit`` held-out prompts, the
    clean leak and refusal rates and the embedding attack at ``eval_eps``; utility on the held-out benign
    prompts; the training curves and cost."""
    from advfast.eval.plots import save_training_curves
    from advfast.llm.evaluate import attack_success, clean_behaviour, utility

    c = trainer.config
    examples = trainer.task.test[: c.eval_limit or None]
    benign = trainer.task.benign_test[: c.eval_limit or None]
    model, tokenizer = trainer.model, trainer.tokenizer
    trainer.say(f"report: {len(examples)} held-out prompts, {len(benign)} benign prompts")
    document: dict[str, Any] = {
        "title": f"{c.method} on {c.task} ({c.model}, {c.finetune})",
        "model": c.model,
        "task": trainer.task.describe(),
        "split": "test",
        "config": c.to_dict(),
    }
    document["clean"] = clean_behaviour(model, tokenizer, examples, max_new_tokens=c.max_new_tokens)
    document["attacks"] = (
        attack_success(
            model,
            tokenizer,
            examples,
            attack="embedding",
            eps=list(c.eval_eps),
            steps=[c.eval_steps],
            options={"norm": c.norm, "region": c.region, "max_new_tokens": c.max_new_tokens},
            say=trainer.say,
        )
        if c.eval_eps
        else []
    )
    references = trainer.reference_answers()["benign_test"]
    benign = benign[: len(references)]
    document["utility"] = utility(model, tokenizer, benign, references, max_new_tokens=c.max_new_tokens)
    metrics = trainer.progress.metrics
    seconds = [m["epoch_seconds"] for m in metrics if m.get("epoch_seconds")]
    document["training"] = {
        "epochs": len(metrics),
        "steps": trainer.progress.step,
        "world_size": trainer.ctx.world_size,
        "seconds_per_epoch": round(sum(seconds) / len(seconds), 1) if seconds else None,
        "trainable_parameters": sum(p.numel() for p in trainer.trainable),
    }
    trainer.model.train()
    paths = write_report(trainer.out, document)
    if metrics:
        paths["curves"] = save_training_curves(metrics, trainer.out / "training_curves.png", title=document["title"])
    u, cl = document["utility"], document["clean"]
    attack = "; ".join(f"embedding eps {r['eps']:g}: {r['success_rate']:.1%}" for r in document["attacks"])
    trainer.say(
        f"held-out: leak {cl['leak_rate']:.1%}, refusal {cl['refusal_rate']:.1%}; {attack or 'no attack'}; "
        f"benign agreement {u['agreement']:.1%}, leak {u['leak_rate']:.1%}"
    )
    return paths
