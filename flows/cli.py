"""The `hcr` command.

    hcr protect SRC DEST [--labels FILE] ...     watermark an archive, write the registry
    hcr audit SRC DEST --registry DEST ...       one verdict row per image, masks, restored crops
    hcr verify DEST --sweep-id ID                compare a run's manifest with its results
    hcr demo                                     protect, edit and audit the bundled photos
    hcr data build | train tokenizer|localizer|recovery|refiner|watermark | bench   (delegated to hcr_model)

Exit status: 0 on success, 1 when shards failed or verify found problems,
2 on invalid arguments or configuration (a missing key, for one).
"""

import argparse
import importlib
import logging
import os
import sys

from flows.options import add_run_arguments, build_config, flat_options
from flows.runtime import HCR_LOGGERS, LOG_LEVEL_ENV
from schemas.config import AuditConfig, ProtectConfig, StorageOptions

logger = logging.getLogger(__name__)

# command -> (module, help); `train` picks the module by its second word.
DELEGATES = {
    "data": ("hcr_model.data.{sub}", "build the benchmark dataset: hcr data build --help"),
    "train": ("hcr_model.training.{sub}", "train a model: hcr train tokenizer|localizer|recovery|refiner|watermark --help"),
    "bench": ("hcr_model.bench.runner", "run the benchmark: hcr bench --help"),
    "demo": ("flows.demo", "protect, edit and audit the bundled photos end to end: hcr demo --help"),
}
DELEGATE_SUBCOMMANDS = {"data": ("build",), "train": ("tokenizer", "localizer", "recovery", "refiner", "watermark")}


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hcr",
        description="Audit image archives for tampering and recover the original content through an embedded hidden code.",
    )
    parser.add_argument("--log-level", default="INFO", help="log level of hcr's own loggers (default: INFO)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    protect = commands.add_parser(
        "protect",
        help="watermark every image of an archive and write the registry",
        description="Embed each image's hidden code as a watermark. Writes DEST/protected/ARCHIVE/IMAGE_ID (same "
        "relative path and format) and DEST/registry/archive=ARCHIVE/part-SHARD.parquet. Creates a key file "
        "(~/.config/hcr/key, mode 0600) when neither HCR_KEY nor HCR_KEY_FILE is set. Rerunning resumes.",
    )
    protect.add_argument("source", metavar="SRC", help="archive URL: folder, s3://bucket/prefix, memory://...")
    protect.add_argument(
        "--out", dest="dest", metavar="DEST", required=True, help="destination URL for protected images and the registry"
    )
    add_run_arguments(protect, ProtectConfig)

    audit = commands.add_parser(
        "audit",
        help="give every image of an archive a verdict",
        description="Audit each image: authentic, tampered, forged, unmarked or error. Writes "
        "DEST/verdicts/sweep_date=D/archive=A/part-SWEEP_ID-SHARD.parquet, masks and restored crops of tampered "
        "images, and DEST/_sweeps/SWEEP_ID/. Needs the protect key (HCR_KEY or HCR_KEY_FILE); never creates one. "
        "Rerunning the same sweep id resumes.",
    )
    audit.add_argument("source", metavar="SRC", help="archive URL: folder, s3://bucket/prefix, memory://...")
    audit.add_argument(
        "--out", dest="dest", metavar="DEST", required=True, help="destination URL for verdicts, masks and restored crops"
    )
    add_run_arguments(audit, AuditConfig)

    verify = commands.add_parser(
        "verify",
        help="compare a run's manifest with its results",
        description="Report images without a row, with several rows or not in the manifest, and unfinished shards.",
    )
    verify.add_argument("dest", metavar="DEST", help="destination URL of the run")
    target = verify.add_mutually_exclusive_group(required=True)
    target.add_argument("--sweep-id", help="audit sweep to verify")
    target.add_argument("--archive", help="protect run (archive name) to verify")
    verify.add_argument("--s3-endpoint-url", help=StorageOptions.model_fields["s3_endpoint_url"].description)

    for name, (_, help_text) in DELEGATES.items():
        commands.add_parser(name, help=help_text, add_help=False)
    return parser


def _delegate(argv: list[str]) -> int:
    """Run `hcr data|train|bench|demo ...` through the owning module's main(argv)."""
    command, rest = argv[0], argv[1:]
    template, _ = DELEGATES[command]
    sub = None
    if command in DELEGATE_SUBCOMMANDS:
        choices = DELEGATE_SUBCOMMANDS[command]
        if not rest or rest[0] not in choices:
            print(f"usage: hcr {command} {{{','.join(choices)}}} [options]; see hcr {command} {choices[0]} --help", file=sys.stderr)
            return 2
        sub, rest = rest[0], rest[1:]
    module_name = template.format(sub=sub)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        print(f"hcr {command}: cannot import {module_name} ({error}); is hcr installed with its extras?", file=sys.stderr)
        return 2
    return int(module.main(rest) or 0)


def _configure_logging(level: str) -> None:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in HCR_LOGGERS:
        logging.getLogger(name).setLevel(level.upper())
    os.environ[LOG_LEVEL_ENV] = level.upper()


def _run(args: argparse.Namespace) -> int:
    from flows import api

    if args.command == "verify":
        report = api.verify(args.dest, sweep_id=args.sweep_id, archive=args.archive, s3_endpoint_url=args.s3_endpoint_url)
        print(report.format())
        return 0 if report.ok else 1

    config_class = ProtectConfig if args.command == "protect" else AuditConfig
    config = build_config(config_class, args.source, args.dest, **flat_options(args, config_class))
    summary = api.run_protect(config) if args.command == "protect" else api.run_audit(config)
    print(summary.format())
    return 0 if summary.ok else 1


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in DELEGATES:
        return _delegate(argv)

    args = _build_parser().parse_args(argv)
    _configure_logging(args.log_level)

    from pydantic import ValidationError

    from hcr_model.keys import InvalidKeyError, KeyNotConfiguredError

    try:
        return _run(args)
    except (KeyNotConfiguredError, InvalidKeyError, ValidationError, NotADirectoryError, FileNotFoundError, ValueError) as error:
        print(f"hcr {args.command}: error: {error}", file=sys.stderr)
        return 2
    except RuntimeError as error:
        # Actors that cannot start, or a Ray cluster too small for them.
        print(f"hcr {args.command}: failed: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
