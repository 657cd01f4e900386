"""Node configuration, read from TOML (`lacre node run --config node.toml`).

    name = "inst-0"                 # authority name in genesis
    key_file = "inst-0.key"         # paths are relative to the config file
    genesis_file = "genesis.json"
    data_dir = "data/inst-0"
    host = "127.0.0.1"
    port = 0                        # 0: the OS picks; the node writes its URL to data_dir/url
    [peers]                         # other authorities' URLs, by name
    inst-1 = "http://127.0.0.1:7001"
    [limits]
    body_bytes_max = 16777216
    mempool_records_max = 200000
    block_delay_ms = 5
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path


class ConfigError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Limits:
    body_bytes_max: int = 16 << 20
    mempool_records_max: int = 200_000
    block_delay_ms: int = 5
    idle_block_ms: int = 1_000
    wait_commit_s: float = 30.0
    verify_threads: int = 2

    def __post_init__(self) -> None:
        if self.body_bytes_max < 1024 or self.mempool_records_max < 1 or self.block_delay_ms < 0:
            raise ConfigError("limits out of range")


@dataclass(frozen=True, slots=True)
class NodeConfig:
    name: str
    key_file: Path
    genesis_file: Path
    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 0
    peers: dict[str, str] = field(default_factory=dict)
    limits: Limits = field(default_factory=Limits)
    # Tests only: POST /v1/admin/partition may cut this node off from peers.
    fault_injection: bool = False

    @classmethod
    def load(cls, path: str | Path) -> "NodeConfig":
        path = Path(path)
        try:
            document = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as error:
            raise ConfigError(f"{path}: {error}") from None
        base = path.parent
        try:
            limits = Limits(**document.get("limits", {}))
            return cls(
                name=str(document["name"]),
                key_file=base / document["key_file"],
                genesis_file=base / document["genesis_file"],
                data_dir=base / document["data_dir"],
                host=str(document.get("host", "127.0.0.1")),
                port=int(document.get("port", 0)),
                peers={str(k): str(v) for k, v in document.get("peers", {}).items()},
                limits=limits,
                fault_injection=bool(document.get("fault_injection", False)),
            )
        except (KeyError, TypeError, ValueError) as error:
            if isinstance(error, ConfigError):
                raise
            raise ConfigError(f"{path}: missing or bad setting {error}") from None


def render(config: dict) -> str:
    """TOML text for a flat config dict with optional [peers] and [limits] tables."""
    lines = []
    tables = {}
    for key, value in config.items():
        if isinstance(value, dict):
            tables[key] = value
        else:
            lines.append(f"{key} = {_toml_value(value)}")
    for name, table in tables.items():
        lines.append(f"\n[{name}]")
        lines.extend(f'"{key}" = {_toml_value(value)}' for key, value in table.items())
    return "\n".join(lines) + "\n"


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'
