// sealroom dashboard: follows a computation's state and events while it is live, then
// reloads once so the page shows its outcome, slots and receipt. No other script runs.
"use strict";
(function () {
  const live = document.getElementById("live");
  if (!live || live.dataset.final === "true") return;
  const cid = live.dataset.cid;
  let after = Number(live.dataset.after || "0");
  const stateEl = document.getElementById("state");
  const tbody = document.querySelector("#events tbody");
  const cell = (tr, text) => { const td = document.createElement("td"); td.textContent = text; tr.appendChild(td); };
  let seen = stateEl ? stateEl.textContent : "";
  async function poll() {
    let body;
    try {
      const r = await fetch("/ui/computations/" + encodeURIComponent(cid) + "/live?after=" + after, {credentials: "same-origin", headers: {"Accept": "application/json"}});
      if (r.redirected || r.status === 401) { window.location.reload(); return; }
      if (!r.ok) { setTimeout(poll, 3000); return; }
      body = await r.json();
    } catch (e) { setTimeout(poll, 3000); return; }
    for (const e of body.events) {
      const tr = document.createElement("tr");
      [String(e.seq), e.time, e.source, e.type, e.state, e.message || e.reason].forEach((t) => cell(tr, t));
      tbody.appendChild(tr);
      after = Math.max(after, e.seq);
    }
    const text = body.status;
    if (stateEl && text !== seen) { stateEl.textContent = text; stateEl.className = "badge " + body.state; }
    // a new state or a filled slot changes the timeline and slot list: show them
    if (body.final || text !== seen || body.events.some((e) => e.type === "upload_accepted")) {
      window.location.reload();
      return;
    }
    setTimeout(poll, 1000);
  }
  setTimeout(poll, 1000);
})();
