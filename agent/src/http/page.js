"use strict";
// Everything here comes from the API with the token the page is given; text is set
// with textContent only.
const token = () => sessionStorage.getItem("tillgate-token");

async function api(path) {
  const headers = token() ? { Authorization: "Bearer " + token() } : {};
  const answer = await fetch(path, { headers });
  if (answer.status === 401) {
    document.getElementById("token-form").style.display = "block";
    throw new Error("the API wants its token (http.token)");
  }
  if (!answer.ok) {
    let why = await answer.text();
    try { why = JSON.parse(why).message || why; } catch (_) { /* plain text */ }
    throw new Error(path + ": " + answer.status + " " + why);
  }
  return answer;
}

function cell(row, text, cls) {
  const td = row.insertCell();
  td.textContent = text === undefined || text === null ? "" : String(text);
  if (cls) td.className = cls;
  return td;
}

function fill(id, rows, render) {
  const body = document.querySelector("#" + id + " tbody");
  body.replaceChildren();
  for (const r of rows) render(body.insertRow(), r);
}

async function playClip(txn) {
  const error = document.getElementById("error");
  try {
    const answer = await api("/v1/clips/" + encodeURIComponent(txn));
    const video = document.getElementById("clip");
    if (video.src.startsWith("blob:")) URL.revokeObjectURL(video.src);
    video.src = URL.createObjectURL(await answer.blob());
    document.getElementById("player-title").textContent =
      "Sale " + txn + " · camera " + (answer.headers.get("x-tillgate-camera") || "?");
    document.getElementById("player").hidden = false;
    video.play().catch(() => {});
  } catch (e) {
    error.textContent = e.message;
  }
}

function alertRow(row, a) {
  cell(row, a.raised_at || a.window_end || "");
  cell(row, a.txn_id || a.kind);
  cell(row, a.terminal_id);
  cell(row, a.decision, a.decision);
  cell(row, (a.rules || []).map((r) => r.id).join(", "));
  const video = row.insertCell();
  if (a.txn_id && a.video && a.video.length) {
    const link = document.createElement("a");
    link.href = "/v1/clips/" + encodeURIComponent(a.txn_id);
    link.className = "clip";
    link.textContent = "clip (" + a.video[0].camera + ")";
    link.addEventListener("click", (e) => { e.preventDefault(); playClip(a.txn_id); });
    video.append(link);
  } else {
    video.textContent = "—";
  }
}

async function refresh() {
  try {
    const status = await (await api("/v1/status")).json();
    const activity = await (await api("/v1/activity")).json();
    document.getElementById("version").textContent = status.version + " · " + status.state;
    document.getElementById("per-minute").textContent = activity.decisions_last_minute;
    document.getElementById("totals").textContent = Object.entries(status.decisions)
      .map(([d, n]) => d + " " + n).join(" · ") + " since start";
    fill("alerts", activity.alerts, alertRow);
    fill("sinks", status.sinks, (row, s) => {
      cell(row, s.name);
      cell(row, s.backlog_records);
      cell(row, s.oldest_unsent_age_s == null ? "—" : s.oldest_unsent_age_s.toFixed(1) + " s");
      cell(row, s.last_error || "");
    });
    fill("cameras", status.cameras || [], (row, c) => {
      cell(row, c.name);
      cell(row, c.state);
      cell(row, c.upload);
      cell(row, c.fps.toFixed(1));
      cell(row, c.backlog_fragments + " (" + c.backlog_seconds.toFixed(0) + " s)");
      cell(row, c.upload_error || c.last_error || "");
    });
    document.getElementById("error").textContent = "";
    document.body.dataset.loaded = "yes";
  } catch (e) {
    document.getElementById("error").textContent = e.message;
  }
}

document.getElementById("token-form").addEventListener("submit", (e) => {
  e.preventDefault();
  sessionStorage.setItem("tillgate-token", document.getElementById("token-input").value);
  document.getElementById("token-form").style.display = "none";
  refresh();
});
refresh();
setInterval(refresh, 5000);
