"""Typed keys for what the aiohttp application holds."""

from __future__ import annotations

from aiohttp import web

from ledger.chain import Chain
from node.config import NodeConfig
from node.metrics import Metrics
from node.service import LedgerService

CONFIG = web.AppKey("config", NodeConfig)
CHAIN = web.AppKey("chain", Chain)
SERVICE = web.AppKey("service", LedgerService)
METRICS = web.AppKey("metrics", Metrics)
DRIVER = web.AppKey("driver", object)  # node.consensus_driver.ConsensusDriver, when n > 1
