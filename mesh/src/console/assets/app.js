// The mesh console: polls /api/view every 2 s and draws the page its path
// names. Plain DOM and SVG, no library; text goes in through textContent
// only, so nothing the mesh reports is ever parsed as markup.
"use strict";

const POLL_MS = 2000;
const DOCTOR_EVERY = 5; // polls: the server re-runs the checks every 30 s
const SVG = "http://www.w3.org/2000/svg";
const page = location.pathname.replace(/^\/+|\/+$/g, "") || "topology";
let ticks = 0;
let doctor = null;
let lastView = null;
let hot = null; // the peer under the pointer or picked, kept across polls
const topo = { svg: null, nodes: new Map(), links: new Map(), vias: new Map() };

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v !== undefined && v !== null) e.setAttribute(k, v);
  }
  for (const k of kids.flat(Infinity)) {
    if (k === undefined || k === null) continue;
    e.append(k instanceof Node ? k : document.createTextNode(String(k)));
  }
  return e;
}

// Host names in natural order: h2 before h10.
const byName = (a, b) => a.peer.localeCompare(b.peer, undefined, { numeric: true });

function svg(tag, attrs) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  return e;
}

const badge = (cls, text) => el("span", { class: "badge " + cls }, text ?? cls);
const chips = (map) => Object.entries(map || {}).map(([k, v]) => el("span", { class: "chip" }, `${k}=${v}`));
const ms = (v) => (v === undefined || v === null ? "–" : `${v.toFixed(1)} ms`);
const pct = (v) => (v === undefined || v === null ? "–" : `${(v * 100).toFixed(1)} %`);

function rate(bps) {
  if (bps === undefined || bps === null) return "–";
  const units = ["B/s", "kB/s", "MB/s", "GB/s"];
  let i = 0;
  while (bps >= 1000 && i < units.length - 1) { bps /= 1000; i++; }
  return `${bps.toFixed(i ? 1 : 0)} ${units[i]}`;
}

function table(head, rows, attrs) {
  return el("table", attrs, el("thead", {}, el("tr", {}, head.map((h) => el("th", {}, h)))), el("tbody", {}, rows));
}

function show(node) {
  const main = document.getElementById("main");
  main.replaceChildren(...[node].flat());
}

function banner(text) {
  const b = document.getElementById("banner");
  b.hidden = !text;
  b.textContent = text || "";
}

// ---- Topology -------------------------------------------------------------

// This host in the middle, its peers on a circle around it: each edge is
// this host's own path to that peer, as it measures it.
function topology(v) {
  if (!topo.svg || !document.contains(topo.svg)) {
    topo.svg = svg("svg", { viewBox: "0 0 1000 760", role: "img", "aria-label": "topology" });
    topo.edges = svg("g", { class: "links" });
    topo.dots = svg("g", { class: "nodes" });
    topo.svg.append(topo.edges, topo.dots);
    topo.nodes.clear();
    topo.links.clear();
    topo.vias.clear();
    topo.info = el("div", { id: "info", class: "card" });
    topo.legend = el("div", { class: "legend card" });
    topo.table = el("div", { class: "card" });
    show([el("div", { class: "topo" }, topo.svg, el("div", {}, topo.legend, topo.info)), topo.table]);
  }
  const links = [...v.links].sort(byName);
  const n = links.length;
  const cx = 500, cy = 380, radius = n > 40 ? 300 : 250;
  const r = Math.max(5, Math.min(18, 700 / Math.max(n, 1)));
  const places = new Map([[v.host.id, { x: cx, y: cy, angle: null }]]);
  links.forEach((l, i) => {
    // Half a step round from the top: no peer sits straight below this
    // host's name.
    const a = (2 * Math.PI * (i + 0.5)) / Math.max(n, 1) - Math.PI / 2;
    places.set(l.peer_id, { x: cx + radius * Math.cos(a), y: cy + radius * Math.sin(a), angle: a });
  });

  const seen = new Set();
  for (const l of links) {
    seen.add(l.peer_id);
    let line = topo.links.get(l.peer_id);
    if (!line) {
      line = svg("line", {});
      line.append(svg("title", {}));
      line.addEventListener("mouseenter", () => pick(line.dataset.id));
      topo.edges.append(line);
      topo.links.set(l.peer_id, line);
    }
    const p = places.get(l.peer_id);
    set(line, { x1: cx, y1: cy, x2: p.x, y2: p.y, class: `link ${l.kind}`, "data-peer": l.peer, "data-id": l.peer_id, "data-kind": l.kind });
    line.firstChild.textContent = `${v.host.name} ↔ ${l.peer}: ${l.path}\nRTT ${ms(l.rtt_ms)}, loss ${pct(l.loss)}`;
    // Which host relays, on the line itself while there is room for it.
    let via = topo.vias.get(l.peer_id);
    if (l.via && n <= 40) {
      if (!via) {
        via = svg("text", { class: "via" });
        topo.edges.append(via);
        topo.vias.set(l.peer_id, via);
      }
      set(via, { x: (cx + p.x) / 2 + 6, y: (cy + p.y) / 2 - 6 });
      via.textContent = `via ${l.via}`;
    } else if (via) {
      via.remove();
      topo.vias.delete(l.peer_id);
    }
  }
  drop(topo.links, seen);
  drop(topo.vias, seen);

  const hosts = [{ id: v.host.id, name: v.host.name, self: true, kind: "direct" }].concat(
    links.map((l) => ({ id: l.peer_id, name: l.peer, self: false, kind: l.kind, link: l })));
  const named = new Set();
  for (const h of hosts) {
    named.add(h.id);
    let g = topo.nodes.get(h.id);
    if (!g) {
      g = svg("g", {});
      g.append(svg("circle", {}), svg("text", {}), svg("title", {}));
      g.addEventListener("mouseenter", () => pick(g.dataset.id));
      topo.dots.append(g);
      topo.nodes.set(h.id, g);
    }
    const p = places.get(h.id);
    const [c, t, title] = g.children;
    set(g, { class: `node${h.self ? " self" : ""}${h.kind === "down" ? " down" : ""}`, "data-host": h.name, "data-id": h.id, "data-self": h.self ? "true" : "false" });
    set(c, { cx: p.x, cy: p.y, r: h.self ? r + 6 : r });
    t.textContent = h.self ? `${h.name} (this host)` : h.name;
    if (p.angle === null) {
      set(t, { x: p.x, y: p.y + r + 24, "text-anchor": "middle", transform: "" });
    } else {
      // Names point outward from the circle, so a hundred stay legible.
      const deg = (p.angle * 180) / Math.PI;
      const left = Math.cos(p.angle) < 0;
      const lx = p.x + (r + 6) * Math.cos(p.angle), ly = p.y + (r + 6) * Math.sin(p.angle);
      set(t, { x: lx, y: ly + 4, "text-anchor": left ? "end" : "start", transform: `rotate(${left ? deg + 180 : deg} ${lx} ${ly})` });
    }
    title.textContent = h.self ? `${h.name}: this host` : `${h.name}: ${h.link.path}, RTT ${ms(h.link.rtt_ms)}, loss ${pct(h.link.loss)}`;
  }
  drop(topo.nodes, named);

  const count = (k) => links.filter((l) => l.kind === k).length;
  topo.legend.replaceChildren(
    el("h3", {}, `${n + 1} hosts, as ${v.host.name} sees them`),
    ...["direct", "relayed", "tcp", "down"].map((k) => el("span", {}, el("i", { class: "swatch " + k }), `${k} ${count(k)}`)),
    el("p", { class: "muted" }, "Each line is this host's own path to a peer. Hover for RTT and loss."));
  topo.table.replaceChildren(el("h3", {}, "Links"), table(
    ["peer", "link", "path", "RTT", "loss", "address", "version"],
    links.map((l) => el("tr", { "data-peer": l.peer, "data-kind": l.kind, "data-id": l.peer_id, class: l.peer_id === hot ? "hot" : null },
      el("td", {}, l.peer), el("td", {}, badge(l.kind)), el("td", {}, l.path), el("td", { class: "num" }, ms(l.rtt_ms)),
      el("td", { class: "num" }, pct(l.loss)), el("td", { class: "mono" }, l.address), el("td", {}, l.version ?? "–"))),
    { id: "links" }));
  topo.view = v;
  info();
}

function set(e, attrs) {
  for (const [k, v] of Object.entries(attrs)) {
    if (e.getAttribute(k) !== String(v)) e.setAttribute(k, v);
  }
}

function drop(map, keep) {
  for (const [id, e] of map) if (!keep.has(id)) { e.remove(); map.delete(id); }
}

function pick(id) {
  hot = id;
  for (const [k, e] of topo.nodes) e.classList.toggle("hot", k === id);
  for (const [k, e] of topo.links) e.classList.toggle("hot", k === id);
  info();
}

function info() {
  const v = topo.view;
  if (!v || !topo.info) return;
  const l = v.links.find((x) => x.peer_id === hot);
  const rows = l
    ? [["host", l.peer], ["link", l.kind + (l.via ? ` via ${l.via}` : "")], ["state", l.state], ["RTT", ms(l.rtt_ms)],
       ["loss", pct(l.loss)], ["address", l.address], ["version", l.version ?? "–"], ["id", l.peer_id]]
    : [["host", `${v.host.name} (this host)`], ["control", v.host.control_address], ["data", v.host.data_address],
       ["version", v.host.version ?? "–"], ["mesh", `${v.mesh_size} hosts`], ["id", v.host.id]];
  topo.info.replaceChildren(el("h3", {}, l ? "Peer" : "This host"),
    el("dl", {}, rows.map(([k, val]) => [el("dt", {}, k), el("dd", {}, val)])));
}

// ---- Networks ---------------------------------------------------------------

function networks(v) {
  if (!v.networks.length) return show(el("p", { class: "muted" }, "No networks."));
  show(v.networks.map((n) => el("section", { class: "card network", "data-network": n.id },
    el("h2", {}, n.id, " ", el("span", { class: "muted mono" }, n.subnet, n.subnet6 ? `  ${n.subnet6}` : "")),
    el("p", {}, "policy ", badge(n.policy, n.policy), "  MTU ", n.mtu, n.egress ? "  egress" : "",
      "  hosts: ", n.hosts.length ? n.hosts.join(", ") : "every host", " ", chips(n.labels)),
    el("h3", {}, `Containers (${n.containers.length})`),
    table(["name", "address", "host", "labels", "sends", "receives"], n.containers.map((c) =>
      el("tr", { "data-container": c.name, class: c.live ? null : "muted" },
        el("td", {}, c.name, c.live ? "" : " (host down)"), el("td", { class: "mono" }, c.ip, c.ip6 ? ` ${c.ip6}` : ""),
        el("td", {}, c.host), el("td", {}, chips(c.labels)),
        el("td", { class: "num" }, rate(c.tx_bps)), el("td", { class: "num" }, rate(c.rx_bps))))),
    el("h3", {}, `Policy rules (${n.rules.length})`),
    n.rules.length
      ? table(["name", "from", "to", "ports"], n.rules.map((r) => el("tr", {}, el("td", {}, r.name),
          el("td", {}, chips(r.from)), el("td", {}, chips(r.to)),
          el("td", {}, r.ports.map((p) => `${p.port}${p.protocol ? "/" + p.protocol : ""}`).join(", ") || "any"))))
      : el("p", { class: "muted" }, n.policy === "deny" ? "None: nothing is allowed between containers." : "None."),
    el("h3", {}, "QoS"),
    n.qos.length
      ? table(["applies to", "rate", "ceiling", "delay", "jitter", "loss"], n.qos.map((q) => el("tr", {},
          el("td", {}, q.container ?? "every container"), el("td", {}, kbit(q.rate_kbit)), el("td", {}, kbit(q.ceiling_kbit)),
          el("td", {}, q.delay_ms ?? "–"), el("td", {}, q.jitter_ms ?? "–"), el("td", {}, q.loss_percent ?? "–"))))
      : el("p", { class: "muted" }, "None."))));
}

const kbit = (k) => (k === undefined || k === null ? "–" : `${k} kbit/s`);

// ---- Services -----------------------------------------------------------------

function services(v) {
  const svc = v.services.map((s) => el("section", { class: "card service", "data-service": s.name },
    el("h2", {}, s.name, el("span", { class: "muted" }, ` on ${s.network}`)),
    el("p", { class: "mono" }, `VIP ${s.vip}`, s.vip6 ? `  ${s.vip6}` : "", "  ports ",
      s.ports.map((p) => `${p.port}→${p.target_port}/${p.protocol}`).join(", "), `  ${s.scheduler}`, " ", chips(s.selector)),
    table(["target", "name", "host", "health", "in rotation", "weight", "connections"], s.targets.map((t) =>
      el("tr", {}, el("td", { class: "mono" }, t.ip + (t.port ? `:${t.port}` : "")), el("td", {}, t.name ?? "–"),
        el("td", {}, t.host ?? "–"), el("td", {}, badge(t.health)), el("td", {}, t.active ? "yes" : "no"),
        el("td", { class: "num" }, t.weight), el("td", { class: "num" }, t.connections))))));
  const fips = el("section", { class: "card" }, el("h2", {}, "Floating IPs"), v.fips.length
    ? table(["address", "pool", "holder", "bindings"], v.fips.map((f) => el("tr", { "data-fip": f.addr },
        el("td", { class: "mono" }, f.addr), el("td", { class: "mono" }, f.pool ?? "–"),
        el("td", {}, f.holder ?? el("span", { class: "muted" }, f.reason ?? "nobody")),
        el("td", {}, f.bindings.map((b) => `${b.public_port} → ${b.service}.${b.network}`).join(", ") || "–"))))
    : el("p", { class: "muted" }, "None."));
  show([...(svc.length ? svc : [el("p", { class: "muted card" }, "No services.")]), fips]);
}

// ---- Host -------------------------------------------------------------------

function host(v) {
  const h = v.host;
  const facts = [["name", h.name], ["id", h.id], ["version", h.version ?? "–"], ["protocol", h.protocol ?? "–"],
    ["control", h.control_address], ["data", h.data_address], ["mesh", `${v.mesh_size} hosts`]];
  const parts = [el("section", { class: "card" }, el("h2", {}, "This host"),
    table(["", ""], facts.map(([k, val]) => el("tr", {}, el("th", {}, k), el("td", { class: "mono" }, val)))))];
  if (v.reload) {
    const r = v.reload;
    parts.push(el("section", { class: "card" }, el("h2", {}, "Last reload"),
      el("p", {}, badge(r.ok ? "ok" : "fail"), ` ${r.file} `, r.error ?? "",
        r.needs_restart.length ? `  needs a restart: ${r.needs_restart.join(", ")}` : "")));
  }
  const checks = (cs) => table(["check", "status", "detail", "fix"], cs.map((c) =>
    el("tr", { "data-check": c.name }, el("td", {}, c.name), el("td", {}, badge(c.status)), el("td", {}, c.detail), el("td", {}, c.fix ?? ""))));
  if (!doctor) {
    parts.push(el("section", { class: "card" }, el("h2", {}, "Checks"), el("p", { class: "muted" }, "Running the checks…")));
  } else if (doctor.error) {
    parts.push(el("section", { class: "card" }, el("h2", {}, "Checks"), el("p", {}, doctor.error)));
  } else {
    const d = doctor.report;
    parts.push(el("section", { class: "card", id: "checks" }, el("h2", {}, "Checks (meshctl doctor)"), checks(d.checks)));
    parts.push(el("section", { class: "card" }, el("h2", {}, `Peers (${d.peers.length})`),
      d.peers.map((p) => {
        const bad = p.checks.filter((c) => c.status === "warn" || c.status === "fail").length;
        return el("details", { open: bad ? "" : null }, el("summary", {}, p.name, " ", bad ? badge("fail", `${bad} problem(s)`) : badge("ok")), checks(p.checks));
      })));
  }
  show(parts);
}

// ---- The loop ---------------------------------------------------------------

const pages = { topology, networks, services, host };

async function fetchJson(url) {
  const r = await fetch(url, { cache: "no-store", credentials: "same-origin" });
  if (r.status === 401) throw new Error("this console needs its token: open /login?token=TOKEN (meshctl console token prints it)");
  if (!r.ok) throw new Error(`${url}: HTTP ${r.status}`);
  return r.json();
}

async function poll() {
  try {
    // The checks take a while (they probe every peer): asked alongside the
    // view, never holding it up, and drawn when they come.
    if (page === "host" && (doctor === null || ticks % DOCTOR_EVERY === 0)) {
      fetchJson("/api/doctor").then((d) => {
        doctor = d;
        if (lastView && page === "host") host(lastView);
      }, () => {});
    }
    const v = await fetchJson("/api/view");
    lastView = v;
    const render = pages[page];
    if (!render) {
      show(el("p", {}, `No page ${page}.`));
    } else {
      render(v);
    }
    document.getElementById("host").textContent = v.host.name;
    const at = new Date(v.generated_unix_ms);
    document.getElementById("updated").textContent = `updated ${at.toLocaleTimeString()}`;
    document.body.dataset.ready = "yes";
    banner(null);
  } catch (e) {
    banner(`Cannot update: ${e.message}`);
  }
  ticks++;
  setTimeout(poll, POLL_MS);
}

for (const a of document.querySelectorAll("nav a")) {
  if (a.dataset.page === page) a.classList.add("active");
}
poll();
