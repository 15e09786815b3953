"""Writing policies to a temporary folder and building devices to match against."""

from __future__ import annotations

from pathlib import Path

from daxd.kernel.model import DaxDevice, Provider, Range
from daxd.policy.errors import PolicyError
from daxd.policy.load import load_policy
from daxd.policy.model import Policy

GiB = 1 << 30


def write(folder: Path, text: str | bytes, name: str = "policy.yaml") -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def load(folder: Path, text: str | bytes) -> Policy:
    return load_policy(write(folder, text))


def problems(folder: Path, text: str | bytes) -> str:
    """The PolicyError text for a main file holding ``text``, with its path written as P."""
    path = write(folder, text)
    try:
        load_policy(path)
    except PolicyError as err:
        return str(err).replace(str(path), "P")
    raise AssertionError("the policy loaded")


def device(
    name: str = "dax0.0",
    *,
    region_id: int = 0,
    size: int = 16 * GiB,
    provider: Provider = Provider.CXL,
    numa_node: int | None = 0,
    target_node: int | None = 1,
    resource: int | None = 0x10_0000_0000,
    ranges: tuple[Range, ...] | None = None,
    uuid: str | None = None,
    namespace: str | None = None,
) -> DaxDevice:
    if ranges is None:
        ranges = () if resource is None else (Range(resource, resource + size - 1),)
    return DaxDevice(
        name=name,
        region_id=region_id,
        size=size,
        align=2 << 20,
        target_node=target_node,
        numa_node=numa_node,
        resource=resource,
        ranges=ranges,
        memmap_on_memory=False,
        driver="device_dax",
        provider=provider,
        devpath=f"devices/platform/region{region_id}/{name}/{name}",
        namespace=namespace,
        uuid=uuid,
    )
