"""Render a benchmark JSON report as Markdown tables, one section each."""

from __future__ import annotations

from collections.abc import Callable

MISSING = "–"


def fmt(value, digits: int = 3) -> str:
    """Format a number for a table cell; None (not measured) becomes a dash."""
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell if isinstance(cell, str) else fmt(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def verdict_text(verdicts: dict | None) -> str:
    if not verdicts:
        return MISSING
    return ", ".join(f"{name} {count}" for name, count in sorted(verdicts.items()))


def _imperceptibility(section: dict) -> str:
    rows = [[r["method"], r["bits"], r["images"], fmt(r["psnr_db"], 2), fmt(r["psnr_db_min"], 2), fmt(r["ssim"], 4), r["note"]] for r in section["rows"]]
    return table(["method", "bits", "images", "PSNR dB", "min PSNR dB", "SSIM", "note"], rows)


def _robustness(section: dict) -> str:
    methods = list(dict.fromkeys(r["method"] for r in section["rows"]))
    attacks = list(dict.fromkeys(r["attack"] for r in section["rows"]))
    cell = {(r["attack"], r["method"]): r for r in section["rows"]}
    images = {r["method"]: r["images"] for r in section["rows"]}
    body = []
    for attack in attacks:
        row = [attack]
        for method in methods:
            r = cell.get((attack, method))
            if r is None:
                row.append("not run")
                continue
            text = f"{fmt(r['bit_accuracy'])} / {fmt(r['exact_rate'], 2)}"
            row.append(text + (f" ({r['unreadable']} unreadable)" if r["unreadable"] else ""))
        body.append(row)
    header = ["attack"] + [f"{m} (n={images[m]})" for m in methods]
    return "Cells: bit accuracy / exact-payload rate.\n\n" + table(header, body)


def _localization(section: dict) -> str:
    rows = []
    for r in section["rows"]:
        rows.append(
            [r["kind"], r["post_edit"], r["images"], fmt(r["area"]), fmt(r["f1"]), fmt(r["iou"]), fmt(r.get("mask_f1")), fmt(r["auc"]),
             fmt(r.get("audit_tampered_rate"), 2), fmt(r.get("audit_f1")), verdict_text(r.get("audit_verdicts"))]
        )
    headers = ["kind", "after edit", "images", "area", "F1", "IoU", "F1 at mask threshold", "AUC", "audit: tampered", "audit F1", "audit verdicts"]
    edits = table(headers, rows)
    fp_rows = [
        [r["processing"], r["images"], fmt(r["fp_pixel_rate"], 4), fmt(r["flagged_rate"], 2), fmt(r.get("audit_authentic_rate"), 2), verdict_text(r.get("audit_verdicts"))]
        for r in section["false_positives"]
    ]
    clean = table(["processing", "images", "FP pixel rate", "flagged", "audit: authentic", "audit verdicts"], fp_rows)
    return edits + "\n\nUntouched protected images:\n\n" + clean


def _recovery(section: dict) -> str:
    methods = section["methods"]
    groups = list(dict.fromkeys((r["kind"], r["post_edit"]) for r in section["rows"]))
    cell = {(r["kind"], r["post_edit"], r["method"]): r for r in section["rows"]}
    body = []
    for kind, post in groups:
        first = cell[(kind, post, methods[0])]
        row = [kind, post, first["images"], fmt(first["payload_valid_rate"], 2)]
        for method in methods:
            r = cell[(kind, post, method)]
            row.append(f"{fmt(r['psnr_mask_db'], 2)} / {fmt(r['ssim_mask'])} / {fmt(r['ssim'])}")
        body.append(row)
    header = ["kind", "after edit", "images", "payload valid"] + methods
    return "Cells: PSNR in the mask (dB) / SSIM in the mask / whole-image SSIM, against the original.\n\n" + table(header, body)


def _retrieval(section: dict) -> str:
    rows = [[r["method"], r["post_edit"], r["queries"], fmt(r["top1_image"]), fmt(r["top1_label"]), fmt(r["top1_imagenet"])] for r in section["rows"]]
    text = "From restored pixels (no payload):\n\n" + table(["query pixels", "after edit", "queries", "top-1 image", "top-1 label", "top-1 ImageNet class"], rows)
    if section["exact_lookup"]:
        exact = [[r["post_edit"], r["images"], fmt(r["payload_valid_rate"]), fmt(r["exact_lookup_rate"]), fmt(r["audit_top1_image"])] for r in section["exact_lookup"]]
        text += "\n\nExact payload lookup (audit path, tampered images):\n\n" + table(["after edit", "images", "payload valid", "exact lookup", "audit top-1 image"], exact)
    return text


def _forgery(section: dict) -> str:
    rows = [
        [
            r["estimator"],
            r["copies"],
            fmt(r["forged_rate"], 3),
            fmt(r.get("mark_found_rate"), 3),
            fmt(r["authentic_rate"], 3),
            fmt(r["payload_valid_rate"], 3),
            fmt(r["copied_bit_accuracy"]),
            verdict_text(r["verdicts"]),
        ]
        for r in section["rows"]
    ]
    headers = ["estimate", "copies", "judged forged", "mark found", "accepted as authentic", "payload valid", "copied bit accuracy", "verdicts"]
    return table(headers, rows)


def _tokenizer(section: dict) -> str:
    rows = [[r["scales"], r["side"], r["hidden_code"], fmt(r["psnr_db"], 2), fmt(r["ssim"]), r["tokens_seen"], r["codebook_used"], fmt(r["perplexity"], 1)] for r in section["rows"]]
    text = f"{section['images']} images.\n\n" + table(["scales decoded", "side", "in hidden code", "PSNR dB", "SSIM", "tokens", "entries used", "perplexity"], rows)
    probes = section.get("probes") or []
    if probes:
        probe_rows = [
            [
                p["tokenizer"],
                "unknown" if p["distill"] is None else p["distill"],
                p["test_photos"],
                fmt(p["test_majority"], 3),
                fmt(p["test_code_embedding_knn"], 3),
                fmt(p["test_code_embedding_linear"], 3),
                fmt(p["test_code_latent_knn"], 3),
                fmt(p["test_code_latent_linear"], 3),
            ]
            for p in probes
        ]
        head = ["tokenizer", "distilled", "test photos", "majority class", "embedding 5-NN", "embedding linear", "latent 5-NN", "latent linear"]
        text += "\n\nCategory probes over the hidden code alone (top-1 on the test photos):\n\n" + table(head, probe_rows)
    if section.get("encode_decode_images_per_s") is not None:
        text += f"\n\nEncode + decode: {fmt(section['encode_decode_images_per_s'], 2)} images/s."
    return text


def _speed(section: dict) -> str:
    rows = [[r["operation"], r["batch"], fmt(r["images_per_s"], 2)] for r in section["rows"]]
    head = f"{section['threads']} torch thread(s) on {section['device']}, 1-minute load average {fmt(section['load_average_1min'], 1)}.\n\n"
    return head + table(["operation", "batch", "images/s"], rows)


RENDERERS: dict[str, tuple[str, Callable[[dict], str]]] = {
    "imperceptibility": ("Imperceptibility", _imperceptibility),
    "robustness": ("Robustness", _robustness),
    "localization": ("Localization", _localization),
    "recovery": ("Recovery", _recovery),
    "retrieval": ("Factual retrieval", _retrieval),
    "forgery": ("Forgery (copy attack)", _forgery),
    "tokenizer": ("Tokenizer", _tokenizer),
    "speed": ("Speed", _speed),
}


def render(report: dict) -> str:
    """Return the Markdown page of a report written by `hcr bench`."""
    machine = report["machine"]
    lines = [
        f"# hcr benchmark: {report['suite']} suite",
        "",
        f"- command: `{report['command']}`",
        f"- date: {report['date']} (UTC), wall time {fmt(report['seconds'], 0)} s",
        f"- machine: {machine['platform']}, {machine['cpus']} CPUs, torch {machine['torch']}, {machine['threads']} thread(s), device {machine['device']}",
        f"- weights: {report['weights']}, images: {report['images']} (gallery {report['gallery']})",
        f"- protection: {report['protection']}",
    ]
    for name, section in report["sections"].items():
        title, renderer = RENDERERS[name]
        lines += ["", f"## {title}", ""]
        if section["status"] != "ok":
            lines.append(f"**{section['status']}**: {section['reason']}")
            continue
        lines.append(renderer(section))
        lines += [""] + [f"- {note}" for note in section.get("notes", [])]
        lines += [f"- **error**: {error}" for error in section.get("errors", [])]
        lines.append(f"- section time {fmt(section['seconds'], 1)} s ({fmt(section.get('cpu_seconds'), 1)} s of CPU)")
    return "\n".join(lines).rstrip() + "\n"
