// EdgeLoop hub dashboard: live device values and node states over server-sent events (/ui/events).
"use strict";
(function () {
  const page = document.body.dataset.page;

  for (const form of document.querySelectorAll("form.confirm")) {
    form.addEventListener("submit", (ev) => {
      if (!window.confirm(form.dataset.confirm || "Sure?")) ev.preventDefault();
    });
  }
  if (page !== "devices" && page !== "nodes") return;

  const table = document.getElementById(page === "devices" ? "devices" : "nodes");
  const cursor = (table && table.dataset.cursor) || "0";
  const live = document.getElementById("live");
  const events = new EventSource("/ui/events?only=" + (page === "devices" ? "values" : "nodes") +
                                  "&after=" + encodeURIComponent(cursor));
  events.addEventListener("signed-out", () => { events.close(); window.location.assign("/ui/login"); });
  const when = (t) => t ? new Date(t * 1000).toLocaleString("sv-SE") : "";

  events.onopen = () => { if (live) { live.textContent = "live"; live.className = "badge ok"; } };
  events.onerror = () => { if (live) { live.textContent = "reconnecting"; live.className = "badge off"; } };

  function cell(text, cls) {
    const td = document.createElement("td");
    if (cls) td.className = cls;
    td.textContent = text;
    return td;
  }

  events.addEventListener("values", (ev) => {
    if (page !== "devices") return;
    const d = JSON.parse(ev.data);
    const key = d.node + "/" + d.device;
    let row = table.querySelector(`tr[data-key="${CSS.escape(key)}"]`);
    if (!row) {
      row = document.createElement("tr");
      row.dataset.key = key;
      row.append(cell(d.device), cell(d.node), cell("", "ts"), cell("", "values"));
      table.tBodies[0].append(row);
    }
    row.querySelector(".ts").textContent = when(d.ts);
    const values = row.querySelector(".values");
    const old = {};
    for (const span of values.querySelectorAll(".kv")) old[span.dataset.field] = span.querySelector("b").textContent;
    values.replaceChildren();
    for (const [k, v] of Object.entries(d.values)) {
      const span = document.createElement("span");
      span.className = "kv" + (old[k] !== undefined && old[k] !== String(v) ? " changed" : "");
      span.dataset.field = k;
      const b = document.createElement("b");
      b.textContent = String(v);
      span.append(k + "=", b, " ");
      values.append(span);
    }
  });

  events.addEventListener("nodes", (ev) => {
    if (page !== "nodes") return;
    for (const n of JSON.parse(ev.data)) {
      const row = table.querySelector(`tr[data-node="${CSS.escape(n.name)}"]`);
      if (!row) continue;
      const badge = row.querySelector(".state .badge");
      badge.textContent = n.online ? "online" : "offline";
      badge.className = "badge " + (n.online ? "ok" : "off");
      row.querySelector(".seen").textContent = n.last_seen ? Math.round(Date.now() / 1000 - n.last_seen) + " s ago" : "never";
      const counters = row.querySelector(".counters");
      counters.replaceChildren();
      for (const [k, v] of Object.entries(n.counters || {})) {
        if (typeof v !== "number") continue;
        const div = document.createElement("div");
        const b = document.createElement("b");
        b.textContent = String(v);
        div.append(k + " ", b);
        counters.append(div);
      }
    }
  });
})();
