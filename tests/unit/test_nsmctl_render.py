"""Watch lines keep their columns in line whatever the records hold."""

from __future__ import annotations

from api.proto.registry_pb2 import NetworkServiceEndpoint
from nsmctl.kinds import parse_kind
from nsmctl.render import Change, watch_header, watch_line


def test_watch_columns_stay_in_line_with_long_cells() -> None:
    kind = parse_kind("nse")
    short = NetworkServiceEndpoint(name="db-1", network_service_names=["secure-db"],
                                   url="tcp://10.0.0.5:5001")
    long = NetworkServiceEndpoint(
        name="an-endpoint-with-a-very-long-name-indeed",
        network_service_names=["secure-db", "another-service", "and-a-third-one"],
        url="tcp://[fd00:1234:5678:9abc::1]:5001")
    long.network_service_labels["secure-db"].labels.update({"region": "eu-west", "tier": "gold"})
    header = watch_header(kind)
    lines = [watch_line(kind, Change.added, record, 0.0) for record in (short, long)]
    starts = [header.index(title) for title in ("SERVICES", "LABELS", "URL", "EXPIRES IN", "AGE")]
    for line in lines:
        for start in starts:  # every column starts where its header does
            assert line[start - 3:start] == "   " and line[start] != " "
    assert "an-endpoint-with-a-very…" in lines[1]
