// The nsmctl dashboard: polls /api/topology (nsmctl graph -o json) and draws it.
// Written for this page, no library: text goes in with textContent, never as HTML.
"use strict";

const POLL_MS = 2000;
const GONE_MS = 60000; // a vanished connection stays visible (as GONE) this long
const SVG = "http://www.w3.org/2000/svg";
const seen = new Map(); // connection id -> {conn, last}

function el(tag, attrs = {}, text) {
  const node = tag.startsWith("svg:") ? document.createElementNS(SVG, tag.slice(4))
                                      : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function bytes(n) {
  if (n === null || n === undefined) return "-";
  const units = ["B", "KiB", "MiB", "GiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return i === 0 ? `${n}B` : `${n.toFixed(1)}${units[i]}`;
}

function age(s) {
  if (s === null || s === undefined) return "-";
  if (s < 120) return `${s}s ago`;
  if (s < 7200) return `${Math.floor(s / 60)}m ago`;
  return `${Math.floor(s / 3600)}h ago`;
}

function where(name, node) { return node ? `${name} (${node})` : name; }

function health(topo) {
  const list = document.getElementById("health");
  const chips = [];
  const reg = topo.domain.registry;
  chips.push([`registry`, reg.up, reg.error]);
  for (const node of topo.nodes) {
    chips.push([`nsmgr ${node.name}`, node.nsmgr.up, node.nsmgr.error]);
    for (const f of node.forwarders) chips.push([`forwarder ${f.name}`, f.up, ""]);
  }
  list.replaceChildren(...chips.map(([label, up, error]) => {
    const li = el("li", {class: up ? "up" : "down", "data-component": label,
                         "data-up": String(up), title: error || ""},
                  `${label}: ${up ? "up" : "DOWN"}`);
    return li;
  }));
}

function rows(topo, now) {
  for (const conn of topo.connections) seen.set(conn.id, {conn, last: now});
  const current = new Set(topo.connections.map((c) => c.id));
  const shown = [];
  for (const [id, entry] of seen) {
    if (current.has(id)) shown.push(entry.conn);
    else if (now - entry.last < GONE_MS) shown.push({...entry.conn, state: "GONE"});
    else seen.delete(id);
  }
  return shown;
}

function table(conns) {
  const body = document.querySelector("#connections tbody");
  body.replaceChildren(...conns.map((c) => {
    const tr = el("tr", {"data-id": c.id, "data-state": c.state,
                         class: c.state === "GONE" ? "gone" : ""});
    const cells = [
      [c.short_id, "id"], [c.service, "service"], [where(c.client, c.client_node), "client"],
      [where(c.endpoint, c.endpoint_node), "endpoint"], [c.state, `state state-${c.state}`],
      [c.via || "-", "via"], [c.mtu || "-", "mtu"],
      [c.via === "wireguard" ? age(c.handshake_age_seconds) : "-", "handshake"],
      [bytes(c.rx_bytes), "rx"], [bytes(c.tx_bytes), "tx"], [c.path.join(" → "), "path"],
    ];
    for (const [text, cls] of cells) tr.append(el("td", {class: cls}, String(text)));
    return tr;
  }));
  document.getElementById("no-connections").hidden = conns.length > 0;
}

// Layout: the registry on top, a column per node holding its nsmgr, forwarders, clients and
// endpoints, a last column for what is on no node asked; vWires are curves client → endpoint.
const COL_W = 250, GAP = 170, ITEM_H = 28, ITEM_GAP = 8, TOP = 110, PAD = 20;

function endpointItem(e) {
  const gone = e.registered === false;
  return {key: `e:${e.name}`, label: `endpoint ${e.name}${gone ? " (not registered)" : ""}`,
          cls: gone ? "endpoint down" : "endpoint"};
}

function columns(topo) {
  const cols = topo.nodes.map((node) => ({
    title: `node ${node.name}`,
    items: [
      {key: `m:${node.name}`, label: `nsmgr ${node.nsmgr.name || node.nsmgr.url}`,
       cls: node.nsmgr.up ? "" : "down"},
      ...node.forwarders.map((f) => ({key: `f:${f.name}`, label: `forwarder ${f.name}`,
                                      cls: f.up ? "" : "down"})),
      ...topo.clients.filter((c) => c.node === node.name)
        .map((c) => ({key: `c:${c.name}`, label: `client ${c.name}`, cls: "client"})),
      ...topo.endpoints.filter((e) => e.node === node.name).map(endpointItem),
    ],
  }));
  const names = new Set(topo.nodes.map((n) => n.name));
  const loose = [
    ...topo.clients.filter((c) => !names.has(c.node))
      .map((c) => ({key: `c:${c.name}`, label: `client ${c.name}`, cls: "client"})),
    ...topo.endpoints.filter((e) => !names.has(e.node)).map(endpointItem),
  ];
  if (loose.length) cols.push({title: "on no node asked", items: loose});
  return cols;
}

function draw(topo, conns) {
  const cols = columns(topo);
  const width = Math.max(PAD * 2 + cols.length * COL_W + (cols.length - 1) * GAP, 400);
  const tallest = Math.max(0, ...cols.map((c) => c.items.length));
  const height = TOP + 40 + tallest * (ITEM_H + ITEM_GAP) + 70;
  const svg = el("svg:svg", {viewBox: `0 0 ${width} ${height}`, width, height, role: "img",
                             "aria-label": "topology"});
  svg.append(el("svg:rect", {class: "domain-box", x: 4, y: 4, width: width - 8,
                             height: height - 8, rx: 8}));
  svg.append(el("svg:text", {x: 14, y: 22, class: "title"}, `domain ${topo.domain.name}`));
  const reg = topo.domain.registry;
  const regX = width / 2 - 140;
  svg.append(el("svg:rect", {class: `item ${reg.up ? "" : "down"}`, x: regX, y: 34,
                             width: 280, height: 34, rx: 6}));
  svg.append(el("svg:text", {x: width / 2, y: 56, "text-anchor": "middle"},
                `registry ${reg.up ? "up" : "DOWN"}`));
  const pos = new Map();
  cols.forEach((col, i) => {
    const x = PAD + i * (COL_W + GAP);
    const h = 36 + col.items.length * (ITEM_H + ITEM_GAP);
    svg.append(el("svg:path", {d: `M ${width / 2} 68 L ${x + COL_W / 2} ${TOP}`,
                               stroke: "#d0d7de", fill: "none"}));
    svg.append(el("svg:rect", {class: "node-box", x, y: TOP, width: COL_W, height: h, rx: 6}));
    svg.append(el("svg:text", {x: x + 10, y: TOP + 20, class: "title"}, col.title));
    col.items.forEach((item, j) => {
      const y = TOP + 32 + j * (ITEM_H + ITEM_GAP);
      svg.append(el("svg:rect", {class: `item ${item.cls}`, x: x + 10, y, width: COL_W - 20,
                                 height: ITEM_H, rx: 4, "data-key": item.key}));
      svg.append(el("svg:text", {x: x + 18, y: y + 18}, item.label.slice(0, 36)));
      pos.set(item.key, {x: x + 10, y: y + ITEM_H / 2, w: COL_W - 20});
    });
  });
  conns.filter((c) => c.state !== "GONE").forEach((c, k) => {
    const a = pos.get(`c:${c.client}`), b = pos.get(`e:${c.endpoint}`);
    if (!a || !b) return;
    const forward = b.x >= a.x;
    const x1 = forward ? a.x + a.w : a.x, x2 = forward ? b.x : b.x + b.w;
    const bend = a.x === b.x ? -80 : 0;
    const d = a.x === b.x
      ? `M ${a.x} ${a.y} C ${a.x + bend} ${a.y}, ${b.x + bend} ${b.y}, ${b.x} ${b.y}`
      : `M ${x1} ${a.y} C ${(x1 + x2) / 2} ${a.y}, ${(x1 + x2) / 2} ${b.y}, ${x2} ${b.y}`;
    svg.append(el("svg:path", {class: `edge ${c.state}`, d, "data-id": c.id}));
    const lx = a.x === b.x ? a.x - 40 : (x1 + x2) / 2, ly = (a.y + b.y) / 2 - 8 - k * 14;
    svg.append(el("svg:text", {class: `edge-label ${c.state}`, x: lx, y: ly,
                               "text-anchor": "middle"}, `${c.short_id} ${c.service} ${c.state}`));
  });
  document.getElementById("graph").replaceChildren(svg);
}

async function poll() {
  const status = document.getElementById("updated");
  try {
    const reply = await fetch("/api/topology", {cache: "no-store"});
    const topo = await reply.json();
    if (!reply.ok) throw new Error(topo.error || `HTTP ${reply.status}`);
    document.getElementById("domain").textContent = `— domain ${topo.domain.name}`;
    const conns = rows(topo, Date.now());
    health(topo);
    table(conns);
    draw(topo, conns);
    status.className = "muted";
    status.textContent = `updated ${new Date().toLocaleTimeString()} (every ${POLL_MS / 1000} s)`;
    document.body.dataset.updates = String(Number(document.body.dataset.updates || 0) + 1);
  } catch (err) {
    status.className = "error";
    status.textContent = `cannot update: ${err.message} (retrying)`;
  } finally {
    setTimeout(poll, POLL_MS);
  }
}

poll();
