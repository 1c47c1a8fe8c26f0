"""Flat option names shared by the CLI (`--batch-size`) and the Python API (`batch_size=`).

Each flat name maps to a field of the nested config models in
`schemas.config`, whose description and default become the `--help` text, so
defaults and units are written once.
"""

import argparse
import typing
from typing import Any

from pydantic import BaseModel

from schemas.config import ProtectConfig, RunOptions

# flat name -> path of the field inside RunOptions
RUN_FIELDS: dict[str, tuple[str, ...]] = {
    "shard_size": ("plan", "shard_size"),
    "s3_endpoint_url": ("storage", "s3_endpoint_url"),
    "storage_retries": ("storage", "retries"),
    "ray_address": ("ray", "address"),
    "num_actors": ("ray", "num_actors"),
    "batch_size": ("ray", "batch_size"),
    "cpus_per_actor": ("ray", "cpus_per_actor"),
    "gpus_per_actor": ("ray", "gpus_per_actor"),
    "num_cpus": ("ray", "num_cpus"),
    "object_store_mb": ("ray", "object_store_mb"),
    "prefect_api_url": ("prefect", "api_url"),
    "model_version": ("model", "version"),
    "device": ("model", "device"),
    "key_file": ("model", "key_file"),
    "crop_search": ("model", "crop_search"),
    "max_pixels": ("limits", "max_pixels"),
    "max_file_mb": ("limits", "max_file_mb"),
    "key_mismatch_fraction": ("limits", "key_mismatch_fraction"),
}
PROTECT_FIELDS = ("archive", "labels", "jpeg_quality")
AUDIT_FIELDS = ("registry", "archive", "sweep_id")


def _field_info(model: type[BaseModel], path: tuple[str, ...]):
    for name in path[:-1]:
        model = model.model_fields[name].annotation
    return model.model_fields[path[-1]]


def build_config(config_class: type[RunOptions], source: str, dest: str, **flat: Any) -> RunOptions:
    """Build a ProtectConfig or AuditConfig from flat keyword options; None means the default."""
    own = PROTECT_FIELDS if config_class is ProtectConfig else AUDIT_FIELDS
    nested: dict[str, Any] = {"source": source, "dest": dest}
    for name, value in flat.items():
        if name == "progress":
            nested["progress"] = bool(value)
            continue
        if value is None:
            continue
        if name in own:
            nested[name] = value
        elif name in RUN_FIELDS:
            group, field = RUN_FIELDS[name]
            nested.setdefault(group, {})[field] = value
        else:
            known = sorted(set(RUN_FIELDS) | set(own) | {"progress"})
            raise TypeError(f"unknown option {name!r}; known options: {', '.join(known)}")
    return config_class.model_validate(nested)


def _help(model: type[BaseModel], path: tuple[str, ...]) -> str:
    info = _field_info(model, path)
    default = info.get_default(call_default_factory=True)
    text = info.description
    if "default:" not in text:
        text += f" (default: {'none' if default is None else default})"
    return text.replace("%", "%%")


def _argument_type(model: type[BaseModel], path: tuple[str, ...]) -> type:
    """Return int, float or str for a field annotated `T` or `T | None`."""
    annotation = _field_info(model, path).annotation
    members = [member for member in typing.get_args(annotation) if member is not type(None)] or [annotation]
    return members[0] if members[0] in (int, float) else str


def add_run_arguments(parser: argparse.ArgumentParser, config_class: type[RunOptions]) -> None:
    """Add the command's own options and every shared run option, with defaults and units in the help."""
    own = PROTECT_FIELDS if config_class is ProtectConfig else AUDIT_FIELDS
    for name in own:
        parser.add_argument(f"--{name.replace('_', '-')}", type=_argument_type(config_class, (name,)), default=None, help=_help(config_class, (name,)))

    groups: dict[str, argparse._ArgumentGroup] = {}
    for name, path in RUN_FIELDS.items():
        group = groups.setdefault(path[0], parser.add_argument_group(f"{path[0]} options"))
        group.add_argument(f"--{name.replace('_', '-')}", type=_argument_type(RunOptions, path), default=None, help=_help(RunOptions, path))
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="hide the progress bar over shards")


def flat_options(namespace: argparse.Namespace, config_class: type[RunOptions]) -> dict[str, Any]:
    """Pick the run options out of parsed CLI arguments."""
    own = PROTECT_FIELDS if config_class is ProtectConfig else AUDIT_FIELDS
    names = list(own) + list(RUN_FIELDS) + ["progress"]
    return {name: getattr(namespace, name) for name in names if hasattr(namespace, name)}

