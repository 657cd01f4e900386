"""A real node application on 127.0.0.1 over a real LevelDB store in tmp_path."""

from __future__ import annotations

import json

import pytest
from aiohttp.test_utils import TestClient, TestServer

from node.app import create_app
from node.config import Limits, NodeConfig
from tests.conftest import Consortium


def node_config(tmp_path, consortium: Consortium, **limits) -> NodeConfig:
    authority = consortium.authority
    key_file = tmp_path / f"{authority.name}.key"
    authority.save(key_file)
    genesis_file = tmp_path / "genesis.json"
    genesis_file.write_text(json.dumps(consortium.genesis.to_json()))
    return NodeConfig(
        name=authority.name, key_file=key_file, genesis_file=genesis_file,
        data_dir=tmp_path / "data", limits=Limits(**limits),
    )


@pytest.fixture
async def make_client(tmp_path, consortium):
    clients = []

    async def make(**limits) -> TestClient:
        app = create_app(node_config(tmp_path, consortium, **limits))
        client = TestClient(TestServer(app, host="127.0.0.1"))
        await client.start_server()
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


@pytest.fixture
async def client(make_client) -> TestClient:
    return await make_client()
