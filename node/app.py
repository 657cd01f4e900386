"""The node application: `create_app(config)` and the runner.

Resources are owned by cleanup contexts, in order: the chain (LevelDB store),
the ledger service (mempool, verifier threads), then block production. Each
is closed in reverse order on shutdown.

Block production follows the epoch in force, not genesis: the sole authority
of a one-authority consortium runs `BlockProducer` until governance adds
another, then the consensus driver; every other node runs the driver, which
signs while the node's key is an authority of the epoch in force and follows
(fetches blocks, forwards records) while it is not.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from ledger.chain import Chain
from ledger.crypto import KeyPair
from ledger.genesis import Genesis
from ledger.leveldb_store import LevelDBStore
from node import api, appkeys
from node.config import ConfigError, NodeConfig
from node.consensus_driver import ConsensusDriver
from node.mempool import Mempool
from node.metrics import Metrics
from node.producer import BlockProducer, sole_authority
from node.service import LedgerService

log = logging.getLogger("lacre.node")

GC_THRESHOLD = (50_000, 20, 10)
"""The cyclic collector's thresholds once the node serves (CPython's default: 700, 10, 10)."""


def create_app(config: NodeConfig) -> web.Application:
    """The node's aiohttp application; storage opens when the app starts."""
    app = web.Application(client_max_size=config.limits.body_bytes_max, middlewares=[api.error_middleware])
    app[appkeys.CONFIG] = config
    app[appkeys.METRICS] = Metrics()
    app.cleanup_ctx.append(_chain_context)
    app.cleanup_ctx.append(_service_context)
    app.cleanup_ctx.append(_producer_context)
    app.add_routes(api.routes())
    return app


async def _chain_context(app: web.Application) -> AsyncIterator[None]:
    config = app[appkeys.CONFIG]
    genesis = Genesis.load(config.genesis_file)
    config.data_dir.mkdir(parents=True, exist_ok=True)
    store = LevelDBStore(config.data_dir / "chain.ldb")
    try:
        chain = Chain(store, genesis)
    except Exception:
        store.close()
        raise
    app[appkeys.CHAIN] = chain
    metrics = app[appkeys.METRICS]
    metrics.height.set(chain.height)
    metrics.tree_size.set(chain.log_size)
    log.info("chain %s opened at height %d, %d records", genesis.origin, chain.height, chain.log_size)
    yield
    chain.close()


async def _service_context(app: web.Application) -> AsyncIterator[None]:
    config = app[appkeys.CONFIG]
    chain = app[appkeys.CHAIN]
    mempool = Mempool(config.limits.mempool_records_max, chain.state, lambda: chain.authority_set)
    service = LedgerService(chain, mempool, app[appkeys.METRICS], config.limits.verify_threads)
    app[appkeys.SERVICE] = service
    yield
    service.close()


async def _producer_context(app: web.Application) -> AsyncIterator[None]:
    config = app[appkeys.CONFIG]
    chain = app[appkeys.CHAIN]
    # The node signs as the name it is configured with (the key file's own
    # label may differ, e.g. a key made before governance named it).
    key = KeyPair(config.name, KeyPair.load(config.key_file).seed)
    _check_identity(config, chain, key)
    state_store = LevelDBStore(config.data_dir / "consensus.ldb")
    driver = ConsensusDriver(
        chain, app[appkeys.SERVICE], key, config.peers, state_store,
        config.limits.block_delay_ms, config.limits.idle_block_ms,
    )
    app[appkeys.DRIVER] = driver
    production: asyncio.Task | None = None
    try:
        if sole_authority(chain, key):
            production = asyncio.create_task(_produce_then_drive(app, key, driver), name="block-producer")
        else:
            await driver.start()
        yield
    finally:
        if production is not None:
            production.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await production
        await driver.close()
        state_store.close()


def _check_identity(config: NodeConfig, chain: Chain, key: KeyPair) -> None:
    """Refuse a key that is an authority in force under another name, or a follower that knows no node.

    A key that is not an authority in force is fine: the node follows (until
    governance adds it), fetching blocks from the nodes it knows.
    """
    authority = chain.authority_set.by_key(key.public_key)
    if authority is not None and authority.name != config.name:
        raise ConfigError(f"{config.key_file} is the key of authority {authority.name!r}, not of {config.name!r}")
    known = set(config.peers) | {a.name for e in chain.history.epochs for a, url in zip(e.authorities, e.urls) if url}
    if authority is None and not known - {config.name}:
        raise ConfigError(f"{config.name} is not an authority in force, and its config names no [peers] to follow")


async def _produce_then_drive(app: web.Application, key: KeyPair, driver: ConsensusDriver) -> None:
    """The n = 1 producer while this key is the only authority; the consensus driver from then on."""
    config = app[appkeys.CONFIG]
    producer = BlockProducer(app[appkeys.SERVICE], key, config.limits.block_delay_ms)
    await producer.run()
    log.info("%s is no longer the only authority (height %d): running consensus", config.name, app[appkeys.CHAIN].height)
    try:
        await driver.start()
    except Exception:  # nobody awaits this task: say why blocks stopped
        log.exception("starting consensus failed; this node no longer commits")


async def serve(config: NodeConfig) -> None:
    """Run the node until SIGINT or SIGTERM; writes its URL to data_dir/url."""
    app = create_app(config)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port, backlog=1024)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    url = f"http://{config.host}:{port}"
    # Written atomically so a supervisor polling for it never reads half a URL.
    url_file = config.data_dir / "url"
    temporary = url_file.with_suffix(".tmp")
    temporary.write_text(url + "\n")
    os.replace(temporary, url_file)
    log.info("node %s serving at %s", config.name, url)
    _tune_collector()
    print(f"{config.name} {url}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def _tune_collector() -> None:
    """Keep the cyclic garbage collector off the hot path.

    Under load a node allocates many short-lived objects per record (decoded
    records, state entries, write-batch tuples) while tens of thousands of
    pending records stay alive in the mempool. With CPython's default
    thresholds the collector kept running full collections over all of them:
    in a 16 s saturation run of the 4-node devnet, 12 per node taking about
    1 s of wall time in all, each one stalling the event loop; these settings
    raised committed records/s by about 8% (docs/consensus.md, "Measured"). What
    exists once the node serves (modules, the chain's caches) is frozen out of
    every collection, and the young generation is collected every 50,000
    allocations, not 700; a full collection is considered every 10 million
    (every 20 s or so under load), so cyclic garbage that outlived two young
    collections (a long request's) is still reclaimed. Reference counting
    frees everything acyclic at once.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLD)


def main(config_path: str | Path) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    asyncio.run(serve(NodeConfig.load(config_path)))
