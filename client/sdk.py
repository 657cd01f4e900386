"""The lacre SDK: an async client of the node HTTP API, and a thin sync wrapper.

    async with AsyncClient("http://127.0.0.1:7700") as node:
        answer = await node.submit([record], wait=True)

    node = Client("http://127.0.0.1:7700")
    print(node.status()["height"])

Refusals come back as `ApiError` carrying the node's status code, error code
and detail. A 503 (overloaded) is retried after its Retry-After, a bounded
number of times.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Sequence
from typing import Any

import aiohttp

from ledger import codec
from ledger.records import SignedRecord

RETRIES_MAX = 20
RETRY_AFTER_MAX_S = 10.0


class ApiError(Exception):
    """The node refused a request (4xx/5xx) or could not be reached (status 0)."""

    def __init__(self, status: int, error: str, detail: str, body: dict | None = None) -> None:
        super().__init__(f"{status} {error}: {detail}" if status else f"{error}: {detail}")
        self.status = status
        self.error = error
        self.detail = detail
        self.body = body or {}


def _encoded(record: SignedRecord | bytes) -> str:
    data = record.encoded if isinstance(record, SignedRecord) else record
    return base64.b64encode(data).decode()


class AsyncClient:
    def __init__(self, url: str, timeout_s: float = 60.0, session: aiohttp.ClientSession | None = None) -> None:
        self.url = url.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session = session
        self._owns_session = session is None

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None and self._owns_session:
            await self._session.close()
        self._session = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session

    async def _request(self, method: str, path: str, *, params: dict | None = None, json: Any = None, text: bool = False) -> Any:
        for attempt in range(RETRIES_MAX + 1):
            try:
                async with self._client().request(method, self.url + path, params=params, json=json) as response:
                    if response.status == 503 and attempt < RETRIES_MAX:
                        delay = min(float(response.headers.get("Retry-After", "1") or 1), RETRY_AFTER_MAX_S)
                        await asyncio.sleep(delay)
                        continue
                    if response.status >= 400:
                        try:
                            body = await response.json(content_type=None)
                            error, detail = body.get("error", "error"), body.get("detail", "")
                        except (ValueError, aiohttp.ContentTypeError, AttributeError):
                            body, error, detail = None, "error", await response.text()
                        raise ApiError(response.status, error, detail, body)
                    if text:
                        return await response.text()
                    body = await response.json(content_type=None)
                    return body
            except aiohttp.ClientError as error:
                raise ApiError(0, "unreachable", f"{self.url}: {error}") from None
            except asyncio.TimeoutError:
                raise ApiError(0, "timeout", f"{self.url}{path} did not answer in time") from None
        raise ApiError(503, "overloaded", "node stayed overloaded")

    async def status(self) -> dict:
        return await self._request("GET", "/v1/status")

    async def checkpoint(self) -> str:
        return await self._request("GET", "/v1/checkpoint", text=True)

    async def submit(self, records: Sequence[SignedRecord | bytes], wait: bool = False) -> dict:
        """Submit records (all or nothing); with `wait`, answer once committed."""
        params = {"wait": "commit"} if wait else None
        return await self._request("POST", "/v1/records", params=params, json={"records": [_encoded(r) for r in records]})

    async def record(self, record_hash: bytes) -> dict:
        return await self._request("GET", f"/v1/records/{record_hash.hex()}")

    async def inclusion_proof(self, record_hash: bytes, tree_size: int | None = None) -> dict:
        params = {"hash": record_hash.hex()}
        if tree_size is not None:
            params["tree_size"] = str(tree_size)
        return await self._request("GET", "/v1/proofs/inclusion", params=params)

    async def consistency_proof(self, old_size: int, new_size: int | None = None) -> dict:
        params = {"from": str(old_size)}
        if new_size is not None:
            params["to"] = str(new_size)
        return await self._request("GET", "/v1/proofs/consistency", params=params)

    async def credential(self, credential_id: bytes) -> dict:
        return await self._request("GET", f"/v1/credentials/{credential_id.hex()}")

    async def credentials_by_prefix(self, prefix: bytes, bits: int) -> dict:
        """Every credential under the first `bits` bits of `prefix`, with a completeness proof."""
        return await self._request(
            "GET", "/v1/credentials", params={"prefix": prefix[: (bits + 7) // 8].hex(), "bits": str(bits)}
        )

    async def receipt(self, credential_id: bytes) -> dict:
        return await self._request("GET", f"/v1/receipts/{credential_id.hex()}")

    async def batch(self, batch_id: bytes) -> dict:
        """What every receipt of a batch shares: `client.batch_receipts.batch_receipts` makes them."""
        return await self._request("GET", f"/v1/batches/{batch_id.hex()}")

    async def issuer(self, issuer_key: bytes) -> dict:
        return await self._request("GET", f"/v1/issuers/{issuer_key.hex()}")

    async def block(self, height: int) -> dict:
        return await self._request("GET", f"/v1/blocks/{height}")

    async def encoded_blocks(self, start: int, limit: int = 100) -> tuple[list[bytes], int]:
        """Canonical bytes of blocks [start, start + limit) and the node's height."""
        params = {"from": str(start), "limit": str(limit)}
        try:
            async with self._client().get(
                self.url + "/v1/blocks", params=params, headers={"Accept": "application/msgpack"}
            ) as response:
                if response.status >= 400:
                    raise ApiError(response.status, "error", await response.text())
                page = codec.decode(await response.read())
        except aiohttp.ClientError as error:
            raise ApiError(0, "unreachable", f"{self.url}: {error}") from None
        except codec.CodecError as error:
            raise ApiError(0, "malformed", f"{self.url}: blocks page: {error}") from None
        return page["blocks"], page["height"]

    async def blocks(self, start: int, limit: int = 100) -> dict:
        return await self._request("GET", "/v1/blocks", params={"from": str(start), "limit": str(limit)})


class Client:
    """Synchronous wrapper: each method runs the async call on a private loop."""

    def __init__(self, url: str, timeout_s: float = 60.0) -> None:
        self._loop = asyncio.new_event_loop()
        self._async = AsyncClient(url, timeout_s)
        self.url = self._async.url

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if not self._loop.is_closed():
            self._loop.run_until_complete(self._async.close())
            self._loop.close()

    def __getattr__(self, name: str):
        method = getattr(self._async, name)
        if not asyncio.iscoroutinefunction(method):
            raise AttributeError(name)

        def call(*args: Any, **kwargs: Any) -> Any:
            return self._loop.run_until_complete(method(*args, **kwargs))

        return call
