"""The topology (:func:`nsmctl.graph.build`) as a terminal tree, Graphviz DOT and Mermaid.

All three show the same thing: the domain and its registry at the root, a box per node holding
its nsmgr, forwarders, clients and endpoints, and one edge per vWire from its client to its
endpoint, labelled with its short ID, service and state (plus carrier and handshake age). Names
from the fabric are quoted and escaped for each format; nodes of DOT and Mermaid get generated
identifiers, so no name can break the syntax.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from rich.text import Text
from rich.tree import Tree

from nsmctl.connections import NONE
from nsmctl.render import human_duration

Topology = Mapping[str, Any]

_STYLE = {True: "green", False: "bold red"}


def _up(flag: bool) -> str:
    return "up" if flag else "DOWN"


def _bytes(value: int | None) -> str:
    if value is None:
        return NONE
    size = float(value)
    for unit in ("B", "KiB", "MiB"):
        if size < 1024:
            return f"{size:.0f}{unit}" if unit == "B" else f"{size:.1f}{unit}"
        size /= 1024
    return f"{size:.1f}GiB"


def vwire_label(conn: Mapping[str, Any]) -> str:
    """``ID service STATE``: the short label of an edge."""
    return f"{conn['short_id']} {conn['service']} {conn['state']}"


def vwire_details(conn: Mapping[str, Any]) -> str:
    """Carrier, MTU, handshake age and bytes of a vWire, as one line."""
    age = conn.get("handshake_age_seconds")
    handshake = f"handshake {human_duration(age)} ago" if age is not None else "no handshake"
    parts = [conn.get("via") or NONE, f"mtu {conn.get('mtu') or NONE}"]
    if conn.get("via") == "wireguard":
        parts.append(handshake)
    parts.append(f"rx/tx {_bytes(conn.get('rx_bytes'))}/{_bytes(conn.get('tx_bytes'))}")
    return ", ".join(parts)


def _where(node: str | None) -> str:
    return f" ({node})" if node else ""


# -- tree -----------------------------------------------------------------------------------------


def _status(label: str, up: bool, extra: str = "") -> Text:
    text = Text(label)
    text.append(" ")
    text.append(_up(up), style=_STYLE[up])
    if extra:
        text.append(f" {extra}", style="dim")
    return text


def _vwire(conn: Mapping[str, Any]) -> Text:
    text = Text(f"vWire {conn['short_id']} {conn['service']} → {conn['endpoint']}"
                f"{_where(conn['endpoint_node'])} ")
    text.append(conn["state"], style=_STYLE[conn["state"] == "UP"])
    text.append(f"  {vwire_details(conn)}", style="dim")
    return text


def _node_branch(tree: Tree, node: Mapping[str, Any], topo: Topology) -> None:
    nsmgr = node["nsmgr"]
    branch = tree.add(_status(f"node {node['name']}: nsmgr {nsmgr['name'] or nsmgr['url']}",
                              nsmgr["up"], nsmgr["error"]))
    for fwd in node["forwarders"]:
        extra = ", ".join(x for x in (fwd["wireguard"], fwd["underlay_ip"] and
                                      f"underlay {fwd['underlay_ip']}") if x)
        branch.add(_status(f"forwarder {fwd['name']}", fwd["up"], extra))
    for endpoint in topo["endpoints"]:
        if endpoint["node"] == node["name"]:
            branch.add(_endpoint(endpoint))
    for client in topo["clients"]:
        if client["node"] == node["name"]:
            leaf = branch.add(f"client {client['name']}")
            for conn in topo["connections"]:
                if conn["client"] == client["name"]:
                    leaf.add(_vwire(conn))


def _endpoint(endpoint: Mapping[str, Any]) -> Text:
    text = Text(f"endpoint {endpoint['name']}: {', '.join(endpoint['services'])}")
    if not endpoint.get("registered", True):
        text.append(" not registered", style=_STYLE[False])
    return text


def tree(topo: Topology) -> Tree:
    """The topology as a rich tree: domain, nodes, their components, clients' vWires."""
    domain = topo["domain"]
    registry = domain["registry"]
    root = Tree(_status(f"domain {domain['name']}: registry {registry['url']}",
                        registry["up"], registry["error"]))
    for node in topo["nodes"]:
        _node_branch(root, node, topo)
    names = {n["name"] for n in topo["nodes"]}
    elsewhere = [e for e in topo["endpoints"] if e["node"] not in names]
    if elsewhere:
        other = root.add("endpoints on no node asked")
        for endpoint in elsewhere:
            other.add(_endpoint(endpoint).append(f" at {endpoint['url'] or '?'}"))
    strays = [c for c in topo["connections"] if c["client_node"] not in names]
    if strays:
        other = root.add("vWires of clients on no node asked")
        for conn in strays:
            other.add(_vwire(conn))
    if not topo["nodes"]:
        root.add("no node asked: give --nsmgr ADDR or --lab")
    return root


# -- DOT and Mermaid ------------------------------------------------------------------------------


class _Ids:
    """Generated identifiers for the graph's vertices (``k0``, ``k1``... by kind)."""

    def __init__(self) -> None:
        self.ids: dict[tuple[str, str], str] = {}

    def __call__(self, kind: str, name: str) -> str:
        key = (kind, name)
        if key not in self.ids:
            self.ids[key] = f"{kind}{len(self.ids)}"
        return self.ids[key]


def _members(node: Mapping[str, Any], topo: Topology) -> list[tuple[str, str, str]]:
    """(kind, name, label) of every vertex inside a node's box."""
    nsmgr = node["nsmgr"]
    members = [("m", node["name"], f"nsmgr {nsmgr['name'] or nsmgr['url']} "
                                   f"({_up(nsmgr['up'])})")]
    members += [("f", f["name"], f"forwarder {f['name']} ({_up(f['up'])})")
                for f in node["forwarders"]]
    members += [("c", c["name"], f"client {c['name']}")
                for c in topo["clients"] if c["node"] == node["name"]]
    members += [("e", e["name"], _endpoint_label(e))
                for e in topo["endpoints"] if e["node"] == node["name"]]
    return members


def _endpoint_label(endpoint: Mapping[str, Any]) -> str:
    gone = "" if endpoint.get("registered", True) else " (not registered)"
    return f"endpoint {endpoint['name']}{gone}\n{', '.join(endpoint['services'])}"


def _loose(topo: Topology) -> list[tuple[str, str, str]]:
    """Clients and endpoints on no node asked (drawn outside the node boxes)."""
    names = {n["name"] for n in topo["nodes"]}
    return ([("c", c["name"], f"client {c['name']}") for c in topo["clients"]
             if c["node"] not in names]
            + [("e", e["name"], _endpoint_label(e))
               for e in topo["endpoints"] if e["node"] not in names])


def _dot_text(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


_DOT_SHAPES = {"m": "box", "f": "box", "c": "ellipse", "e": "doubleoctagon"}


def dot(topo: Topology) -> str:
    """The topology as a Graphviz digraph (``dot -Tsvg`` renders it)."""
    ids = _Ids()
    registry = topo["domain"]["registry"]
    lines = ["digraph vwire {", "  rankdir=LR;", '  node [fontname="Helvetica"];',
             "  subgraph cluster_domain {",
             f"    label={_dot_text('domain ' + topo['domain']['name'])};",
             f"    registry [shape=cylinder, label="
             f"{_dot_text('registry ' + registry['url'] + ' (' + _up(registry['up']) + ')')}];"]
    vertex = "    {} [shape={}, label={}];"
    for i, node in enumerate(topo["nodes"]):
        lines += [f"    subgraph cluster_node{i} {{",
                  f"      label={_dot_text('node ' + node['name'])};"]
        lines += ["  " + vertex.format(ids(kind, name), _DOT_SHAPES[kind], _dot_text(label))
                  for kind, name, label in _members(node, topo)]
        lines.append("    }")
    lines += [vertex.format(ids(kind, name), _DOT_SHAPES[kind], _dot_text(label))
              for kind, name, label in _loose(topo)]
    lines.append("  }")
    for conn in topo["connections"]:
        color = "darkgreen" if conn["state"] == "UP" else "red"
        style = "solid" if conn["state"] == "UP" else "dashed"
        lines.append(f"  {ids('c', conn['client'])} -> {ids('e', conn['endpoint'])} "
                     f"[label={_dot_text(vwire_label(conn))}, color={color}, style={style}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _mermaid_text(text: str) -> str:
    """Text in a Mermaid label: quoted, with entity codes for what would end or break it."""
    for raw, code in (("&", "#amp;"), ('"', "#quot;"), ("<", "#lt;"), (">", "#gt;"),
                      ("\n", "<br/>"), ("|", "#124;")):
        text = text.replace(raw, code)
    return f'"{text}"'


_MERMAID_SHAPES: dict[str, Callable[[str], str]] = {
    "m": lambda t: f"[{t}]", "f": lambda t: f"[{t}]", "c": lambda t: f"([{t}])",
    "e": lambda t: f"{{{{{t}}}}}",
}


def mermaid(topo: Topology) -> str:
    """The topology as a Mermaid flowchart (GitHub renders ```` ```mermaid ```` blocks)."""
    ids = _Ids()
    registry = topo["domain"]["registry"]
    lines = ["flowchart LR",
             f"  subgraph domain[{_mermaid_text('domain ' + topo['domain']['name'])}]",
             f"    registry[({_mermaid_text('registry ' + registry['url'] + ' (' + _up(registry['up']) + ')')})]"]  # noqa: E501
    for i, node in enumerate(topo["nodes"]):
        lines.append(f"    subgraph node{i}[{_mermaid_text('node ' + node['name'])}]")
        lines += [f"      {ids(kind, name)}{_MERMAID_SHAPES[kind](_mermaid_text(label))}"
                  for kind, name, label in _members(node, topo)]
        lines.append("    end")
    lines += [f"    {ids(kind, name)}{_MERMAID_SHAPES[kind](_mermaid_text(label))}"
              for kind, name, label in _loose(topo)]
    lines.append("  end")
    down = []
    for i, conn in enumerate(topo["connections"]):
        arrow = "-->" if conn["state"] == "UP" else "-.->"
        lines.append(f"  {ids('c', conn['client'])} {arrow}|{_mermaid_text(vwire_label(conn))}|"
                     f" {ids('e', conn['endpoint'])}")
        if conn["state"] != "UP":
            down.append(str(i))
    if down:
        lines.append(f"  linkStyle {','.join(down)} stroke:red")
    return "\n".join(lines) + "\n"
