// The operations view: polls the hub's JSON every two seconds and renders five panels.
// Plain DOM, no framework and no build step; text is always set with textContent.
"use strict";

const POLL_MS = 2000;
const $ = (selector) => document.querySelector(selector);
let shownChild = null;

function number(value) {
  return value === null || value === undefined ? "–" : value.toLocaleString("en-GB");
}

function moment(iso) {
  return iso ? iso.replace("T", " ").slice(0, 19) : "–";
}

function cell(text, className) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined || text === "" ? "–" : String(text);
  if (className) td.className = className;
  return td;
}

function row(cells, data = {}, className = "") {
  const tr = document.createElement("tr");
  for (const [key, value] of Object.entries(data)) tr.dataset[key] = value;
  if (className) tr.className = className;
  tr.append(...cells);
  return tr;
}

async function getJSON(url, options = {}) {
  const response = await fetch(url, { cache: "no-store", ...options });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const error = new Error(body.error || `${response.status} ${response.statusText}`);
    error.status = response.status;
    throw error;
  }
  return body;
}

function renderStatus(health) {
  const status = $("#status");
  const parts = [
    `Kafka ${health.bootstrap}`,
    health.municipality,
    `${number(health.records_read)} records read`,
    health.caught_up ? "caught up" : `reading (${number(health.behind)} behind)`,
    `updated ${new Date().toLocaleTimeString("en-GB")}`,
  ];
  const errors = Object.entries(health.errors || {});
  if (errors.length) parts.push(`problem: ${errors.map(([what, text]) => `${what}: ${text}`).join("; ")}`);
  status.textContent = parts.join(" · ");
  status.classList.toggle("problem", errors.length > 0);
}

function renderTopics({ topics }) {
  $("#topics tbody").replaceChildren(
    ...topics.map((t) => {
      const types = Object.entries(t.types).map(([type, n]) => `${type} ${number(n)}`).join(" · ");
      return row(
        [
          cell(t.topic, "mono"),
          cell(number(t.partitions), "num"),
          cell(number(t.messages), "num messages"),
          cell(types, "types"),
        ],
        { topic: t.topic },
        t.catalogue ? "" : "infra",
      );
    }),
  );
}

function groupState({ state, members }) {
  if (!state) return "";
  if (members === null || members === undefined) return state.toLowerCase();
  return `${state.toLowerCase()}, ${members} member${members === 1 ? "" : "s"}`;
}

function renderLag({ groups, notes }) {
  $("#lag tbody").replaceChildren(
    ...groups.map((g) =>
      row(
        [
          cell(g.group, "mono"),
          cell(groupState(g)),
          cell(g.topic, "mono"),
          cell(number(g.committed), "num"),
          cell(number(g.end), "num"),
          cell(number(g.lag), g.lag > 0 ? "num lag behind" : "num lag"),
        ],
        { group: g.group, topic: g.topic },
      ),
    ),
  );
  $("#lag-empty").hidden = groups.length > 0;
  $("#lag-note").textContent = notes.length ? `Broker: ${notes.join("; ")}.` : "";
}

async function replay(id, button) {
  const result = $("#replay-result");
  button.disabled = true;
  result.className = "";
  result.textContent = `Replaying ${id.slice(0, 8)} …`;
  try {
    const done = await getJSON(`/api/deadletters/${encodeURIComponent(id)}/replay`, {
      method: "POST",
      headers: { "X-Hub-Ops": "replay" },
    });
    result.className = "ok";
    result.textContent = `Replayed ${done.id.slice(0, 8)} to ${done.topic}; its consumer skips it if it was applied after all.`;
    refresh();
  } catch (error) {
    result.className = "failed";
    result.textContent = `Replay of ${id.slice(0, 8)} failed: ${error.message}`;
    button.disabled = false;
  }
}

function replayCell(letter) {
  const td = document.createElement("td");
  td.className = "action";
  if (letter.replayed) {
    td.textContent = `replayed to ${letter.replayed.topic}`;
  } else if (!letter.replayable) {
    td.textContent = "fix at the source system";
  } else {
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = "Replay";
    button.addEventListener("click", () => replay(letter.id, button));
    td.append(button);
  }
  return td;
}

function renderDeadLetters({ total, dead_letters: letters }) {
  $("#dead-total").textContent = total ? `(${number(total)})` : "";
  $("#deadletters tbody").replaceChildren(
    ...letters.map((d) =>
      row(
        [
          cell(d.id.slice(0, 8), "mono"),
          cell(moment(d.dead_at), "when"),
          cell(d.service),
          cell(d.reason),
          cell(d.event_type),
          cell(d.source, "mono"),
          cell(d.error_type ? `${d.error_type}: ${d.error}` : d.error),
          replayCell(d),
        ],
        { id: d.id },
      ),
    ),
  );
  $("#deadletters-empty").hidden = letters.length > 0;
}

function renderRound({ round, institutions }) {
  const summary = $("#round-summary");
  if (!round) {
    summary.textContent = "No round yet.";
  } else if (round.completed) {
    summary.textContent =
      `Round ${round.round_id.slice(0, 8)} as of ${round.round_date}: ` +
      `${number(round.applications_considered)} applications considered, ` +
      `${number(round.offers_made)} offers made, ${number(round.children_unplaced)} left without ` +
      `an offer (lottery seed ${round.lottery_seed}).`;
  } else {
    summary.textContent = `Round ${round.round_id.slice(0, 8)} of ${moment(round.at)}: offers so far.`;
  }
  const columns = ["capacity", "made", "live", "accepted", "declined", "expired", "revoked"];
  $("#round tbody").replaceChildren(
    ...institutions.map((i) =>
      row(
        [cell(i.institution_id, "mono"), ...columns.map((c) => cell(number(i[c]), `num ${c}`))],
        { institution: i.institution_id },
      ),
    ),
  );
}

function renderTimeline(found) {
  const offer = found.offer ? ` · offer ${found.offer.seat} (${found.offer.status})` : "";
  const dropped = found.dropped ? ` · ${found.dropped} older entries not kept` : "";
  const message = $("#child-message");
  message.className = "";
  message.textContent = `${found.child_ref} · application ${found.application_id || "not read"}${offer}${dropped}`;
  $("#timeline tbody").replaceChildren(
    ...found.entries.map((e) => {
      const kind = document.createElement("td");
      const badge = document.createElement("span");
      badge.className = `kind kind-${e.kind}`;
      badge.textContent = e.kind;
      badge.title = e.event_type;
      kind.append(badge);
      kind.className = "kind-cell";
      kind.dataset.kind = e.kind;
      return row([cell(moment(e.at), "when"), kind, cell(e.summary, "summary")], { kind: e.kind });
    }),
  );
  $("#timeline").hidden = false;
}

async function showChild(ref) {
  shownChild = ref;
  try {
    const found = await getJSON(`/api/children/${encodeURIComponent(ref)}/timeline`);
    if (shownChild === ref) renderTimeline(found);
  } catch (error) {
    if (shownChild !== ref) return;
    const message = $("#child-message");
    message.className = "failed";
    message.textContent =
      error.status === 404
        ? `No message about child ${ref} has been read. Check the reference (CH-…).`
        : `Cannot load the timeline: ${error.message}`;
    $("#timeline").hidden = true;
  }
}

const panels = [
  ["/health", renderStatus],
  ["/api/topics", renderTopics],
  ["/api/lag", renderLag],
  ["/api/deadletters", renderDeadLetters],
  ["/api/round", renderRound],
];

async function refresh() {
  const results = await Promise.allSettled(panels.map(([url]) => getJSON(url)));
  results.forEach((result, n) => {
    if (result.status === "fulfilled") panels[n][1](result.value);
  });
  if (results[0].status === "rejected") {
    $("#status").textContent = "The hub does not answer; retrying …";
    $("#status").classList.add("problem");
  }
  if (shownChild) await showChild(shownChild);
}

async function poll() {
  try {
    await refresh();
  } finally {
    setTimeout(poll, POLL_MS);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("#child-search").addEventListener("submit", (event) => {
    event.preventDefault();
    const ref = $("#child-ref").value.trim();
    if (!ref) return;
    history.replaceState(null, "", `#child=${encodeURIComponent(ref)}`);
    showChild(ref);
  });
  const linked = new URLSearchParams(location.hash.slice(1)).get("child");
  if (linked) {
    $("#child-ref").value = linked;
    shownChild = linked;
  }
  poll();
});
