"""The public HTTP API (v1): one route table, thin handlers.

Handlers decode the request, call the ledger service or chain, and encode
the answer. Every refusal is an `ApiError`, rendered by `error_middleware` as
`{"error": <code>, "detail": <text>}` with a 4xx status; unexpected failures
are logged and answered 500 without touching state.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import time

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from consensus.evidence import Evidence
from ledger import codec
from ledger.chain import Chain
from ledger.merkle import leaf_hash
from ledger.merkle_log import MerkleLogError
from ledger.batch import BatchTree
from ledger.records import SignedRecord, leaf_data
from ledger.smt import TooManyLeavesError
from ledger.entries import CredentialEntry
from ledger.status_proof import (
    PREFIX_BITS_MAX,
    PREFIX_BITS_MIN,
    prove_batch,
    prove_credential,
    prove_issuer,
    prove_prefix,
)
from node import appkeys
from node.service import Overloaded, SubmissionRefused
from node.views import b64, block_view, body_view, credential_view, header_view, issuer_view

log = logging.getLogger("lacre.api")

BLOCKS_PAGE_MAX = 100
BLOCKS_PAGE_BYTES = 16 << 20
MSGPACK = "application/msgpack"
SUBMISSION_RECORDS_MAX = 20_000
RETRY_AFTER_S = 1
RECEIPT_VERSION = 2
PREFIX_BITS_DEFAULT = 16
# Bounds the work of one prefix query; a verifier asks for more bits instead.
PREFIX_CREDENTIALS_MAX = 4096
BATCH_TREES_CACHED = 4


class ApiError(Exception):
    def __init__(self, status: int, error: str, detail: str = "", **extra: object) -> None:
        super().__init__(detail)
        self.status = status
        self.error = error
        self.detail = detail
        self.extra = extra


def _error_response(status: int, error: str, detail: str, headers: dict | None = None, **extra) -> web.Response:
    return web.json_response({"error": error, "detail": detail, **extra}, status=status, headers=headers)


@web.middleware
async def error_middleware(request: web.Request, handler):
    try:
        return await handler(request)
    except ApiError as error:
        headers = {"Retry-After": str(RETRY_AFTER_S)} if error.status == 503 else None
        return _error_response(error.status, error.error, error.detail, headers, **error.extra)
    except web.HTTPException as error:
        if error.status < 400:
            raise
        code = {404: "not-found", 405: "method-not-allowed", 413: "body-too-large"}.get(error.status, "http-error")
        allow = error.headers.get("Allow") if error.status == 405 else None
        return _error_response(error.status, code, error.reason, {"Allow": allow} if allow else None)
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return _error_response(500, "internal", "unexpected error; nothing was changed")


# -- parameter parsing ---------------------------------------------------

def _hex32(text: str, what: str) -> bytes:
    if len(text) != 64:
        raise ApiError(400, "bad-parameter", f"{what} must be 64 lowercase hex characters")
    try:
        value = bytes.fromhex(text)
    except ValueError:
        raise ApiError(400, "bad-parameter", f"{what} must be 64 lowercase hex characters") from None
    if value.hex() != text:
        raise ApiError(400, "bad-parameter", f"{what} must be lowercase hex")
    return value


def _int_param(request: web.Request, name: str, default: int | None = None, low: int = 0) -> int:
    text = request.query.get(name)
    if text is None:
        if default is None:
            raise ApiError(400, "bad-parameter", f"missing parameter {name}")
        return default
    if not text.isdigit() or len(text) > 19:
        raise ApiError(400, "bad-parameter", f"{name} must be a non-negative integer")
    value = int(text)
    if value < low:
        raise ApiError(400, "bad-parameter", f"{name} must be at least {low}")
    return value


def _chain(request: web.Request) -> Chain:
    return request.app[appkeys.CHAIN]


def _tree_size(request: web.Request, chain: Chain, name: str = "tree_size") -> int:
    size = _int_param(request, name, default=chain.log_size)
    if size > chain.log_size:
        raise ApiError(400, "bad-parameter", f"{name} {size} is beyond the committed size {chain.log_size}")
    return size


# -- handlers ---------------------------------------------------------------

async def status(request: web.Request) -> web.Response:
    chain = _chain(request)
    config = request.app[appkeys.CONFIG]
    head = chain.head
    return web.json_response({
        "origin": chain.origin,
        "node": config.name,
        "genesis_hash": chain.chain_id.hex(),
        "height": chain.height,
        "tree_size": chain.log_size,
        "log_root": chain.log.root(chain.log_size).hex(),
        "state_root": head.state_root.hex() if head else "",
        "head_hash": chain.head_hash.hex(),
        "timestamp_ms": head.timestamp_ms if head else 0,
        "authorities": [a.name for a in chain.authority_set.authorities],
        "quorum": chain.authority_set.quorum,
        "peers": [
            {"name": name, "url": url, "connected": _connected(request, name)}
            for name, url in sorted(config.peers.items())
        ],
        "mempool_depth": len(request.app[appkeys.SERVICE].mempool),
    })


async def genesis(request: web.Request) -> web.Response:
    """genesis.json: what an auditor or an importing node needs to start from block 1."""
    return web.json_response(_chain(request).genesis.to_json())


async def consortium(request: web.Request) -> web.Response:
    """The trust file with the whole authority-set history, and the change records behind it.

    URLs come from the change records, else from this node's peer table.
    `lacre trust export` re-checks every change's approvals before trusting it.
    """
    chain = _chain(request)
    config = request.app[appkeys.CONFIG]
    known_urls = dict(config.peers)

    def authorities(entry) -> list[dict]:
        return [
            {"name": a.name, "key": a.verifier.encode(), "url": url or known_urls.get(a.name, "")}
            for a, url in zip(entry.authorities, entry.urls)
        ]

    epochs = chain.history.epochs
    history = [
        {"epoch": e.epoch, "from_height": e.from_height, "quorum": e.authority_set.quorum,
         "authorities": authorities(e), "block_records_max": e.block_records_max}
        for e in epochs
    ]
    trust = {
        "origin": chain.origin,
        "genesis_hash": chain.chain_id.hex(),
        "quorum": history[-1]["quorum"],
        "authorities": history[-1]["authorities"],
        "history": history,
    }
    changes = [
        {"epoch": e.epoch, "leaf_index": e.leaf_index, "record": b64(chain.record_at(e.leaf_index))}
        for e in epochs[1:]
    ]
    return web.json_response({"trust": trust, "changes": changes})


def _connected(request: web.Request, name: str) -> bool:
    driver = request.app.get(appkeys.DRIVER)
    return driver is not None and name in driver.peers.connected


async def checkpoint(request: web.Request) -> web.Response:
    note = _chain(request).checkpoint_note()
    if note is None:
        raise ApiError(404, "no-checkpoint", "no block has been committed yet")
    return web.Response(text=note, content_type="text/plain")


async def submit_records(request: web.Request) -> web.Response:
    service = request.app[appkeys.SERVICE]
    wait = request.query.get("wait", "")
    if wait not in ("", "commit"):
        raise ApiError(400, "bad-parameter", "wait must be 'commit' or absent")
    encoded = await _read_records(request)
    try:
        admitted = await service.submit(encoded)
    except SubmissionRefused as refused:
        first = refused.refusals[0]
        raise ApiError(
            first.status, first.error,
            f"record {first.index}: {first.detail}" + (
                f" (and {len(refused.refusals) - 1} more)" if len(refused.refusals) > 1 else ""
            ),
            refused=[
                {"index": r.index, "error": r.error, "detail": r.detail} for r in refused.refusals[:1000]
            ],
        ) from None
    except Overloaded:
        raise ApiError(503, "overloaded", "mempool full; retry later") from None
    hashes = [a.record_hash for a in admitted]
    if wait != "commit":
        return web.json_response(
            {"records": [{"hash": a.record_hash.hex(), "status": a.state.value} for a in admitted]}, status=202
        )
    config = request.app[appkeys.CONFIG]
    locations = await service.wait_committed(admitted, config.limits.wait_commit_s)
    chain = _chain(request)
    records = []
    for record_hash, location in zip(hashes, locations):
        if location is None:
            records.append({"hash": record_hash.hex(), "status": "pending"})
        else:
            records.append({
                "hash": record_hash.hex(), "status": "committed",
                "leaf_index": location.leaf_index, "height": location.height,
            })
    done = all(location is not None for location in locations)
    return web.json_response(
        {"records": records, "tree_size": chain.log_size, "height": chain.height},
        status=200 if done else 202,
    )


async def _read_records(request: web.Request) -> list[bytes]:
    if request.content_type == "application/octet-stream":
        return [await request.read()]
    try:
        document = json.loads(await request.read())
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "malformed-json", "body is not JSON") from None
    if isinstance(document, dict) and set(document) == {"record"}:
        items = [document["record"]]
    elif isinstance(document, dict) and set(document) == {"records"} and isinstance(document["records"], list):
        items = document["records"]
    else:
        raise ApiError(400, "malformed-request", 'body must be {"record": base64} or {"records": [base64, ...]}')
    if not items:
        raise ApiError(400, "malformed-request", "no records")
    if len(items) > SUBMISSION_RECORDS_MAX:
        raise ApiError(413, "too-many-records", f"at most {SUBMISSION_RECORDS_MAX} records per submission")
    encoded = []
    for index, item in enumerate(items):
        if not isinstance(item, str):
            raise ApiError(400, "malformed-request", f"record {index} is not a base64 string")
        try:
            encoded.append(base64.b64decode(item, validate=True))
        except (binascii.Error, ValueError):
            raise ApiError(400, "malformed-request", f"record {index} is not valid base64") from None
    return encoded


async def get_record(request: web.Request) -> web.Response:
    chain = _chain(request)
    record_hash = _hex32(request.match_info["hash"], "record hash")
    location = chain.locate(record_hash)
    if location is None:
        if record_hash in request.app[appkeys.SERVICE].mempool:
            return web.json_response({"hash": record_hash.hex(), "status": "pending"}, status=202)
        raise ApiError(404, "unknown-record", "no committed record has this hash")
    data = leaf_data(chain.record_at(location.leaf_index))
    record = SignedRecord.decode(data)
    return web.json_response({
        "hash": record_hash.hex(),
        "status": "committed",
        "record": b64(data),
        "leaf_index": location.leaf_index,
        "height": location.height,
        **body_view(record),
    })


async def inclusion_proof(request: web.Request) -> web.Response:
    chain = _chain(request)
    if "hash" not in request.query:
        raise ApiError(400, "bad-parameter", "missing parameter hash")
    record_hash = _hex32(request.query["hash"], "hash")
    tree_size = _tree_size(request, chain)
    location = chain.locate(record_hash)
    if location is None:
        raise ApiError(404, "unknown-record", "no committed record has this hash")
    if location.leaf_index >= tree_size:
        raise ApiError(400, "bad-parameter", f"record is leaf {location.leaf_index}, not in a tree of {tree_size}")
    path = chain.log.inclusion_proof(location.leaf_index, tree_size)
    answer = {
        "hash": record_hash.hex(),
        "leaf_index": location.leaf_index,
        "tree_size": tree_size,
        "inclusion_path": [node.hex() for node in path],
    }
    if tree_size == chain.log_size:
        answer["checkpoint"] = chain.checkpoint_note()
    return web.json_response(answer)


async def consistency_proof(request: web.Request) -> web.Response:
    chain = _chain(request)
    old_size = _int_param(request, "from")
    new_size = _tree_size(request, chain, "to")
    if old_size > new_size:
        raise ApiError(400, "bad-parameter", "from must not exceed to")
    try:
        path = chain.log.consistency_proof(old_size, new_size)
    except MerkleLogError as error:
        raise ApiError(400, "bad-parameter", str(error)) from None
    answer = {"from": old_size, "to": new_size, "consistency_path": [node.hex() for node in path]}
    if new_size == chain.log_size:
        answer["checkpoint"] = chain.checkpoint_note()
    return web.json_response(answer)


def _inclusion(chain: Chain, leaf_index: int, tree_size: int) -> dict:
    return {
        "record": b64(leaf_data(chain.record_at(leaf_index))),
        "leaf_index": leaf_index,
        "inclusion_path": [node.hex() for node in chain.log.inclusion_proof(leaf_index, tree_size)],
    }


_batch_trees: dict[bytes, BatchTree] = {}
"""Recently used batch trees by their root: the root is the hash of the ids, so a hit is always right."""


def _batch_tree(chain: Chain, entry: CredentialEntry) -> BatchTree:
    """The tree of the batch that issued `entry`, from its stored ids (a few recent ones kept)."""
    key = chain.state.batch(entry.batch_id).root
    tree = _batch_trees.get(key)
    if tree is None:
        record = SignedRecord.decode_whole(chain.record_at(entry.issuance_leaf))
        tree = BatchTree(record.credential_ids())
        if len(_batch_trees) >= BATCH_TREES_CACHED:
            _batch_trees.pop(next(iter(_batch_trees)))
        _batch_trees[key] = tree
    return tree


def batch_document(chain: Chain, batch_id: bytes) -> dict:
    """What every receipt of a batch shares, under the latest checkpoint (`client/batch_receipts.py`)."""
    batch = chain.state.batch(batch_id)
    if batch is None or chain.head is None:
        raise ApiError(404, "unknown-batch", "no batch with this id was issued")
    tree_size = chain.log_size
    issuance = _inclusion(chain, batch.leaf_index, tree_size)
    location = chain.locate(leaf_hash(base64.b64decode(issuance["record"])))
    return {
        "batch_id": batch_id.hex(),
        "status": batch.status.value,
        "count": batch.count,
        "height": location.height if location else None,
        "record": issuance["record"],
        "leaf_index": batch.leaf_index,
        "tree_size": tree_size,
        "inclusion_path": issuance["inclusion_path"],
        "checkpoint": chain.checkpoint_note(),
        "batch_proof": prove_batch(chain.state, batch_id).to_json(),
        "issuer_proof": prove_issuer(chain.state, batch.issuer_key).to_json(),
    }


def build_receipt(chain: Chain, credential_id: bytes) -> dict:
    """The holder's receipt: the issuance record and its inclusion proof, the
    credential's status proof and its issuer's registry proof, all under the
    latest cosigned checkpoint (fields: `client/verify.py`). A batch member's
    receipt also carries its path in the batch and the batch's proof."""
    entry = chain.state.credential(credential_id)
    if entry is None or chain.head is None:
        raise ApiError(404, "unknown-credential", "no credential with this id was issued")
    tree_size = chain.log_size
    issuance = _inclusion(chain, entry.issuance_leaf, tree_size)
    receipt = {
        "version": RECEIPT_VERSION,
        "credential_id": credential_id.hex(),
        "record": issuance["record"],
        "leaf_index": issuance["leaf_index"],
        "tree_size": tree_size,
        "inclusion_path": issuance["inclusion_path"],
        "checkpoint": chain.checkpoint_note(),
    }
    if entry.batch_id:
        tree = _batch_tree(chain, entry)
        receipt["batch"] = {"index": entry.batch_index, "path": [h.hex() for h in tree.path(entry.batch_index)]}
        receipt["batch_proof"] = prove_batch(chain.state, entry.batch_id).to_json()
    receipt["status_proof"] = prove_credential(chain.state, credential_id).to_json()
    receipt["issuer_proof"] = prove_issuer(chain.state, entry.issuer_key).to_json()
    return receipt


async def credential(request: web.Request) -> web.Response:
    """A credential's status with its proofs: what a holder staples for a verifier."""
    chain = _chain(request)
    credential_id = _hex32(request.match_info["id"], "credential id")
    entry = chain.state.credential(credential_id)
    tree_size = chain.log_size
    answer: dict = {"credential_id": credential_id.hex(), "status": "unknown"}
    if entry is not None:
        issuer = chain.state.issuer(entry.issuer_key)
        kind = "credential.issue_batch" if entry.batch_id else "credential.issue"
        records = [{"kind": kind, **_inclusion(chain, entry.issuance_leaf, tree_size)}]
        if entry.changed_leaf >= 0:
            change = _inclusion(chain, entry.changed_leaf, tree_size)
            records.append({"kind": SignedRecord.decode(chain.record_at(entry.changed_leaf)).kind, **change})
        answer = {
            **credential_view(entry, int(time.time())),
            "issuer": issuer_view(issuer) if issuer else {"key": entry.issuer_key.hex()},
            "records": records,
            "issuer_proof": prove_issuer(chain.state, entry.issuer_key).to_json(),
        }
        if entry.batch_id:
            tree = _batch_tree(chain, entry)
            answer["batch"] = {
                "batch_id": entry.batch_id.hex(), "index": entry.batch_index,
                "path": [h.hex() for h in tree.path(entry.batch_index)],
            }
            answer["batch_proof"] = prove_batch(chain.state, entry.batch_id).to_json()
    answer.update(
        tree_size=tree_size,
        checkpoint=chain.checkpoint_note(),
        status_proof=prove_credential(chain.state, credential_id).to_json(),
    )
    return web.json_response(answer)


async def credentials_by_prefix(request: web.Request) -> web.Response:
    """k-anonymous status: every credential under an id prefix, proven complete."""
    chain = _chain(request)
    bits = _int_param(request, "bits", default=PREFIX_BITS_DEFAULT, low=PREFIX_BITS_MIN)
    if bits > PREFIX_BITS_MAX:
        raise ApiError(400, "bad-parameter", f"bits must be {PREFIX_BITS_MIN}..{PREFIX_BITS_MAX}")
    text = request.query.get("prefix", "")
    if len(text) != 2 * ((bits + 7) // 8):
        raise ApiError(400, "bad-parameter", f"prefix must be {(bits + 7) // 8} bytes of hex for {bits} bits")
    try:
        prefix = bytes.fromhex(text)
    except ValueError:
        raise ApiError(400, "bad-parameter", "prefix must be hex") from None
    try:
        proof = prove_prefix(chain.state, prefix, bits, PREFIX_CREDENTIALS_MAX)
    except TooManyLeavesError:
        raise ApiError(
            400, "prefix-too-short", f"more than {PREFIX_CREDENTIALS_MAX} credentials share this prefix; use more bits"
        ) from None
    return web.json_response({
        "tree_size": chain.log_size,
        "checkpoint": chain.checkpoint_note(),
        "prefix_proof": proof.to_json(),
    })


async def receipt(request: web.Request) -> web.Response:
    chain = _chain(request)
    credential_id = _hex32(request.match_info["id"], "credential id")
    return web.json_response(build_receipt(chain, credential_id))


async def batch(request: web.Request) -> web.Response:
    chain = _chain(request)
    batch_id = _hex32(request.match_info["id"], "batch id")
    return web.json_response(batch_document(chain, batch_id))


async def issuer(request: web.Request) -> web.Response:
    chain = _chain(request)
    key = _hex32(request.match_info["key"], "issuer key")
    entry = chain.state.issuer(key)
    if entry is None:
        raise ApiError(404, "unknown-issuer", "no issuer registered with this key")
    return web.json_response({
        **issuer_view(entry),
        "tree_size": chain.log_size,
        "checkpoint": chain.checkpoint_note(),
        "issuer_proof": prove_issuer(chain.state, key).to_json(),
    })


async def block(request: web.Request) -> web.Response:
    chain = _chain(request)
    text = request.match_info["height"]
    if not text.isdigit() or len(text) > 19:
        raise ApiError(400, "bad-parameter", "height must be a positive integer")
    found = chain.block(int(text))
    if found is None:
        raise ApiError(404, "unknown-block", f"no block at height {text}; the head is {chain.height}")
    return web.json_response(block_view(found))


async def blocks(request: web.Request) -> web.Response:
    chain = _chain(request)
    start = _int_param(request, "from", default=1, low=1)
    limit = min(_int_param(request, "limit", default=BLOCKS_PAGE_MAX, low=1), BLOCKS_PAGE_MAX)
    heights = range(start, min(start + limit, chain.height + 1))
    # A page ends early past BLOCKS_PAGE_BYTES (blocks of cohort batches
    # carry megabytes of ids); readers page on from the last block they got.
    page, size = [], 0
    for height in heights:
        block = chain.block(height)
        page.append(block)
        size += sum(map(len, block.records))
        if size >= BLOCKS_PAGE_BYTES:
            break
    if MSGPACK in request.headers.get("Accept", ""):
        # For sync and audit: the canonical bytes of each block, which the
        # receiver checks against certificates, not a JSON rendering.
        body = codec.encode({"blocks": [block.encode() for block in page], "height": chain.height})
        return web.Response(body=body, content_type=MSGPACK)
    return web.json_response({"blocks": [block_view(block) for block in page], "height": chain.height})


async def head(request: web.Request) -> web.Response:
    chain = _chain(request)
    if chain.head is None:
        raise ApiError(404, "no-block", "no block has been committed yet")
    return web.json_response(header_view(chain.head))


async def metrics(request: web.Request) -> web.Response:
    registry = request.app[appkeys.METRICS].registry
    response = web.Response(body=generate_latest(registry))
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response


async def healthz(request: web.Request) -> web.Response:
    """Liveness, and the trivial GET that benchmarks compare proofs against."""
    return web.Response(text="ok")


def _driver(request: web.Request):
    driver = request.app.get(appkeys.DRIVER)
    if driver is None:
        raise ApiError(404, "no-consensus", "this consortium has a single authority")
    return driver


async def peer_socket(request: web.Request) -> web.StreamResponse:
    return await _driver(request).peers.accept(request)


async def evidence(request: web.Request) -> web.Response:
    driver = request.app.get(appkeys.DRIVER)
    items = []
    for data in driver.evidence() if driver is not None else []:
        item = Evidence.decode(data)
        items.append({
            "authority": item.authority, "height": item.height, "round": item.round,
            "encoded": b64(data),
        })
    return web.json_response({"evidence": items})


async def partition(request: web.Request) -> web.Response:
    """Tests only (config fault_injection): drop all traffic with the named peers."""
    if not request.app[appkeys.CONFIG].fault_injection:
        raise ApiError(404, "not-found", "fault injection is disabled")
    try:
        document = await request.json()
        blocked = set(document["blocked"])
    except (ValueError, KeyError, TypeError):
        raise ApiError(400, "malformed-request", 'body must be {"blocked": [names]}') from None
    driver = _driver(request)
    driver.peers.block(blocked)
    return web.json_response({"blocked": sorted(blocked)})


def routes() -> list[web.RouteDef]:
    return [
        web.get("/healthz", healthz),
        web.get("/v1/status", status),
        web.get("/v1/consortium", consortium),
        web.get("/v1/genesis", genesis),
        web.get("/v1/checkpoint", checkpoint),
        web.post("/v1/records", submit_records),
        web.get("/v1/records/{hash}", get_record),
        web.get("/v1/proofs/inclusion", inclusion_proof),
        web.get("/v1/proofs/consistency", consistency_proof),
        web.get("/v1/credentials/{id}", credential),
        web.get("/v1/credentials", credentials_by_prefix),
        web.get("/v1/receipts/{id}", receipt),
        web.get("/v1/batches/{id}", batch),
        web.get("/v1/issuers/{key}", issuer),
        web.get("/v1/blocks/{height}", block),
        web.get("/v1/blocks", blocks),
        web.get("/v1/head", head),
        web.get("/metrics", metrics),
        web.get("/v1/evidence", evidence),
        web.get("/v1/peer/ws", peer_socket),
        web.post("/v1/admin/partition", partition),
    ]
