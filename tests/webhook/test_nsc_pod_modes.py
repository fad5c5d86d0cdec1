"""The two ``nsc`` processes of an injected pod: the init container connects and leaves the
vWire open, the sidecar (same name) takes the very same connection over from the state file —
one connection at every hop, same path ids — and closes it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from google.protobuf import json_format

from api.proto.connection_pb2 import Connection
from nsc.__main__ import _netns, _parser, _resumed
from nsc.client import VWireClient
from nsc.probe import is_reply
from sdk.errors import InvalidArgument
from sdk.testing import Sandbox


def _client(box: Sandbox, nsmgr: str, resume: Connection | None = None) -> VWireClient:
    return VWireClient(
        name="web-7d9f.default", nsmgr=nsmgr, pool=box.pool, netns_url="sandbox",
        network_service="sandbox", interface="nsm0", keep=False, probe=False, resume=resume,
    )


async def test_the_sidecar_refreshes_the_connection_the_init_container_left(
    tmp_path: Path,
) -> None:
    async with Sandbox() as box:
        node = await box.node()
        endpoint = await box.endpoint(node, "nse-a")
        init = _client(box, node.nsmgr_url)
        first = await init.connect()
        # what `nsc --init --state-file` leaves behind (tokens redacted, as written there)
        state = tmp_path / "state.json"
        state.write_text(json.dumps({"connections": [
            json_format.MessageToDict(first, preserving_proto_field_name=True)]}))
        resumed = _resumed(str(state))
        sidecar = _client(box, node.nsmgr_url, resume=resumed["sandbox"])
        second = await sidecar.connect()
        assert [s.id for s in second.path.path_segments] == \
            [s.id for s in first.path.path_segments]
        assert second.context.ip_context.dst_ip_addrs == first.context.ip_context.dst_ip_addrs
        assert len(endpoint.monitor.connections) == 1
        await sidecar.close()
        assert not endpoint.monitor.connections
        assert node.manager is not None and not node.manager.monitor.connections


def test_a_bad_state_file_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "state.json"
    bad.write_text("{not json")
    with pytest.raises(InvalidArgument, match="--resume: cannot read state file"):
        _resumed(str(bad))
    assert _resumed("") == {}


def test_netns_inode_names_the_namespace_by_device_and_inode() -> None:
    args = _parser().parse_args(["kernel://a", "--netns-inode", "--init", "--resume", "f"])
    sent, probe_from = _netns(args)
    info = os.stat("/proc/self/ns/net")
    assert sent == f"inode://{info.st_dev}/{info.st_ino}" and probe_from is None
    assert args.init and args.resume == "f"


def test_a_datagram_echo_reply_is_matched_by_sequence_only() -> None:
    # unprivileged ICMP sockets: no IP header, and the kernel owns the identifier
    reply = bytes([0, 0, 0, 0, 0x12, 0x34, 0, 7])
    assert is_reply(4, reply, 1, 7, dgram=True)
    assert not is_reply(4, reply, 1, 8, dgram=True)
    assert not is_reply(4, reply, 1, 7)  # a raw socket's packet has an IP header first
