// The mediatasks web page: sign in with an API key, submit links, watch tasks live, read the ledger.
// Plain JavaScript module, no build step. All text from the server is inserted as text, never as HTML.

const KEY_STORAGE = "mediatasks.apiKey";
const TERMINAL = new Set(["extracted", "failed"]);
const MAX_STREAMS = 4;
const OUTPUT_NAMES = { subtitles: "Subtitles", video: "Video", video_and_subtitles: "Video and subtitles",
  audio: "Audio only" };
const ERROR_WORDS = {
  media_not_found: "The video could not be found (deleted, or the link is wrong).",
  media_private: "The video is private or needs a login.",
  provider_auth: "Our video provider refused us; an operator has to fix this.",
  too_large: "The video is too large to store.",
  url_not_allowed: "The video is hosted at an address we may not fetch.",
  too_many_redirects: "The video's address redirected too many times.",
  unsupported_content: "What the platform sent is not a video or readable subtitles.",
  no_video: "This post has no video.",
  no_subtitles: "This video has no subtitles in the languages asked for.",
  retries_exhausted: "The platform kept failing; we gave up after several attempts.",
  rate_limited: "The platform is limiting requests; trying again shortly.",
  no_suitable_format: "The video is not offered at or under the height you chose; try a larger one.",
  live_not_supported: "This is a live stream; only finished videos can be stored.",
  drm_protected: "This video is copy-protected (DRM) and cannot be stored.",
  manifest_too_large: "The platform's list of video parts is too large to read.",
  too_long: "The video is longer than this service stores.",
  segment_unavailable: "A part of the video kept failing to download; trying again shortly.",
};
const EVENT_WORDS = {
  Started: "Submitted", Downloading: "Attempt started", Processing: "Working",
  Extracted: "Finished", Failed: "Failed", Retried: "Retried by you",
};

const state = { key: localStorage.getItem(KEY_STORAGE), prices: {}, streams: new Map(), tasks: new Map(),
  submission: null, route: null, pollTimer: null };
const $ = (id) => document.getElementById(id);

class ApiFailure extends Error {
  constructor(status, error) {
    super(error.message || `HTTP ${status}`);
    this.status = status;
    this.code = error.code || "http_error";
    this.details = error.details;
  }
}

/** Build an element: h("p", {class: "x"}, "text", child). Strings become text nodes. */
function h(tag, attrs = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === false || value === null || value === undefined) continue;
    element.setAttribute(name, value === true ? "" : String(value));
  }
  element.append(...children.filter((c) => c !== null && c !== undefined && c !== false));
  return element;
}

async function api(path, { method = "GET", body, headers = {}, raw = false } = {}) {
  const init = { method, headers: { Authorization: `Bearer ${state.key}`, ...headers } };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  const response = await fetch(path, init);
  if (!response.ok) {
    const payload = await response.json().catch(() => ({}));
    const failure = new ApiFailure(response.status, payload.error || {});
    if (response.status === 401 && path !== "/v1/account") signOut("Your API key is no longer valid; sign in again.");
    throw failure;
  }
  return raw ? response : response.json();
}

function credits(n) {
  return `${n} credit${Math.abs(n) === 1 ? "" : "s"}`;
}

function when(iso) {
  const date = new Date(iso);
  return h("time", { datetime: date.toISOString() }, date.toLocaleString(undefined,
    { year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit" }));
}

function say(text) {
  $("live").textContent = text;
}

/** A background refresh that failed: say so (a 401 has already signed the user out). */
function reportProblem(failure) {
  if (failure.status !== 401) say(`Could not refresh: ${failure.message}`);
}

// ---- sign in / out -------------------------------------------------------------------------------

async function signIn(event) {
  event.preventDefault();
  const key = $("api-key").value.trim();
  const error = $("signin-error");
  if (!key) {
    error.textContent = "Paste your API key first.";
    $("api-key").focus();
    return;
  }
  state.key = key;
  try {
    await api("/v1/account");
  } catch (failure) {
    state.key = null;
    error.textContent = failure.status === 401 ? "This API key is not valid." : `Could not sign in: ${failure.message}`;
    $("api-key").setAttribute("aria-invalid", "true");
    $("api-key").focus();
    return;
  }
  localStorage.setItem(KEY_STORAGE, key);
  $("api-key").value = "";
  $("api-key").removeAttribute("aria-invalid");
  error.textContent = "";
  route();
}

function signOut(message = "") {
  localStorage.removeItem(KEY_STORAGE);
  state.key = null;
  closeStreams();
  state.tasks.clear();
  $("tasks").replaceChildren();
  $("signin-error").textContent = message;
  if (location.hash && location.hash !== "#/") location.hash = "#/";
  route();
}

// ---- routing -------------------------------------------------------------------------------------

function show(viewId, titleId) {
  for (const id of ["signin-view", "home-view", "task-view"]) $(id).hidden = id !== viewId;
  $("who").hidden = !state.key;
  $(titleId).focus();
}

function route() {
  closeStreams();
  clearInterval(state.pollTimer);
  if (!state.key) {
    state.route = "signin";
    show("signin-view", "signin-title");
    $("api-key").focus();
    return;
  }
  const match = location.hash.match(/^#\/tasks\/([0-9a-f-]{36})$/);
  if (match) {
    state.route = match[1];
    show("task-view", "task-title");
    renderTaskPage(match[1]).catch(reportProblem);
  } else {
    state.route = "home";
    show("home-view", "home-title");
    document.title = "Your tasks · mediatasks";
    loadTasks().catch(reportProblem);
    loadWebhooks().catch(reportProblem);
    state.pollTimer = setInterval(() => pollUnstreamed().catch(reportProblem), 3000);
  }
  loadAccount().catch(reportProblem);
}

// ---- account -------------------------------------------------------------------------------------

const LEDGER_WORDS = { grant: "Credits added", charge: "Charged", refund: "Refunded" };

async function loadAccount() {
  const account = await api("/v1/account?limit=50");
  $("balance").textContent = account.balance;
  $("account-balance").textContent = account.balance;
  $("ledger").tBodies[0].replaceChildren(...account.entries.map((entry) => h("tr", { "data-kind": entry.kind },
    h("td", {}, when(entry.at)),
    h("td", {}, LEDGER_WORDS[entry.kind], entry.task_id ? " · " : "",
      entry.task_id ? h("a", { href: `#/tasks/${entry.task_id}` }, "task") : "", entry.reason ? ` (${entry.reason})` : ""),
    h("td", { class: "num" }, entry.amount > 0 ? `+${entry.amount}` : String(entry.amount)),
    h("td", { class: "num" }, String(entry.balance)))));
  return account;
}

/** After a failure the refund lands a moment later: refresh until it shows (bounded). */
async function awaitRefund(taskId) {
  for (let i = 0; i < 40; i += 1) {
    const [task, account] = await Promise.all([api(`/v1/tasks/${taskId}`), loadAccount()]);
    if (task.refunded_credits > 0 && account.entries.some((e) => e.kind === "refund" && e.task_id === taskId)) {
      updateTask(task);
      say(`Refunded ${credits(task.refunded_credits)}. Balance: ${account.balance}.`);
      return;
    }
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

// ---- submitting ----------------------------------------------------------------------------------

function renderOutputTypes() {
  const choices = Object.entries(OUTPUT_NAMES).map(([value, name], index) => h("label", {},
    h("input", { type: "radio", name: "output_type", value, checked: index === 0 }),
    `${name} — ${credits(state.prices[value] ?? "?")}`));
  $("output-types").replaceChildren(...choices);
}

function submissionBody() {
  const form = $("submit-form");
  const languages = $("languages").value.split(/[\s,]+/).filter(Boolean);
  return { url: $("url").value.trim(), output_type: form.elements.output_type.value, languages,
    max_height: Number($("max-height").value), mute: $("mute").checked, audio_format: $("audio-format").value };
}

function submitError(failure) {
  if (failure.code === "insufficient_credits") {
    const d = failure.details || {};
    return `Not enough credits: this costs ${credits(d.price ?? "?")} and your balance is ${credits(d.balance ?? 0)}.`;
  }
  if (failure.code === "invalid_url") return "That is not a web address: it must start with http:// or https://.";
  if (failure.code === "unsupported_url") {
    return `We cannot use this link: ${failure.message} Paste the link of one video or post (TikTok, YouTube, Instagram, X, Vimeo, …).`;
  }
  if (failure.code === "validation_failed" && Array.isArray(failure.details)) {
    const problem = failure.details[0];
    const field = problem.loc[problem.loc.length - 1];
    if (field === "url") return "Paste a link first.";
    return `${field}: ${problem.message}`;
  }
  return `Could not submit: ${failure.message}`;
}

async function submitTask(event) {
  event.preventDefault();
  const body = submissionBody();
  const signature = JSON.stringify(body);
  // One submission = one Idempotency-Key: a double click or a resend after a network error makes one task.
  if (state.submission?.signature !== signature) state.submission = { signature, key: crypto.randomUUID(), pending: null };
  const submission = state.submission;
  if (submission.pending) return submission.pending;
  const button = $("submit-button");
  button.setAttribute("aria-busy", "true");
  submission.pending = (async () => {
    try {
      const accepted = await api("/v1/tasks", { method: "POST", body, headers: { "Idempotency-Key": submission.key } });
      state.submission = null;
      $("submit-error").textContent = "";
      $("url").removeAttribute("aria-invalid");
      $("url").value = "";
      say(`Task submitted; ${credits(accepted.credits_charged)} charged.`);
      await Promise.all([loadTasks(accepted.task_id), loadAccount()]);
    } catch (failure) {
      if (failure instanceof ApiFailure) state.submission = null;
      $("submit-error").textContent = failure instanceof ApiFailure ? submitError(failure) : `Could not reach the service: ${failure.message}`;
      if (failure.status === 422) $("url").setAttribute("aria-invalid", "true");
      $("url").focus();
    } finally {
      submission.pending = null;
      button.removeAttribute("aria-busy");
    }
  })();
  return submission.pending;
}

// ---- the task list -------------------------------------------------------------------------------

function failureText(task) {
  if (!task.error) return null;
  const words = ERROR_WORDS[task.error.code] || task.error.message;
  if (task.status === "retrying") return `Attempt ${task.error.attempt ?? task.attempts} failed: ${words} Trying again.`;
  const refund = task.refunded_credits > 0 ? ` Refunded ${credits(task.refunded_credits)}.` : " The refund is on its way.";
  return `Failed: ${words}${refund}`;
}

function taskCard(task) {
  const title = task.title || task.url;
  return h("li", { class: "task", "data-task-id": task.task_id, "data-status": task.status },
    h("h3", {}, h("a", { href: `#/tasks/${task.task_id}` }, title)),
    h("p", { class: "meta" }, `${task.platform} · ${OUTPUT_NAMES[task.output_type]} · `,
      h("span", { class: `status status-${task.status}` }, task.status), ` · attempts: ${task.attempts}`),
    h("div", { class: "progress" },
      h("progress", { max: 100, value: task.progress, "aria-label": `Progress of ${title}` }),
      h("span", { class: "percent" }, `${task.progress}%`)),
    task.error ? h("p", { class: "failure" }, failureText(task)) : null);
}

function updateTask(task) {
  const previous = state.tasks.get(task.task_id);
  state.tasks.set(task.task_id, { ...previous, ...task });
  const merged = state.tasks.get(task.task_id);
  const card = document.querySelector(`.task[data-task-id="${task.task_id}"]`);
  if (card) card.replaceWith(taskCard(merged));
  if (state.route === task.task_id) renderSummary(merged);
}

/** The list comes from the read model, which may lag a write by a moment: `justSubmitted` is read by id (that waits). */
async function loadTasks(justSubmitted = null) {
  const page = await api("/v1/tasks?limit=20");
  if (justSubmitted && !page.tasks.some((t) => t.task_id === justSubmitted)) {
    page.tasks.unshift(await api(`/v1/tasks/${justSubmitted}`));
  }
  if (state.route !== "home") return;
  for (const task of page.tasks) state.tasks.set(task.task_id, task);
  $("tasks").replaceChildren(...page.tasks.map(taskCard));
  $("tasks-empty").hidden = page.tasks.length > 0;
  for (const task of page.tasks) if (!TERMINAL.has(task.status)) follow(task.task_id);
}

/** Tasks beyond MAX_STREAMS are refreshed by polling the list. */
async function pollUnstreamed() {
  const active = [...document.querySelectorAll(".task")].filter((card) => !TERMINAL.has(card.dataset.status));
  if (active.some((card) => !state.streams.has(card.dataset.taskId))) await loadTasks();
}

// ---- live streams ----------------------------------------------------------------------------------

async function follow(taskId) {
  if (state.streams.has(taskId) || state.streams.size >= MAX_STREAMS) return;
  state.streams.set(taskId, null);
  let token;
  try {
    token = await api(`/v1/tasks/${taskId}/stream-token`, { method: "POST" });
  } catch {
    state.streams.delete(taskId);
    return;
  }
  if (!state.streams.has(taskId)) return; // closed meanwhile (route change)
  // EventSource cannot send headers: the short-lived stream token goes in the query. It reconnects by itself
  // with Last-Event-ID, so no update is lost or repeated.
  const source = new EventSource(`/v1/tasks/${taskId}/events?access_token=${encodeURIComponent(token.access_token)}`);
  state.streams.set(taskId, source);
  source.addEventListener("status", (message) => {
    const update = JSON.parse(message.data);
    updateTask({ task_id: taskId, status: update.status, progress: update.progress, attempts: update.attempt,
      error: update.error, stage: update.stage });
    if (TERMINAL.has(update.status)) {
      source.close();
      state.streams.delete(taskId);
      say(update.status === "extracted" ? "A task finished." : "A task failed.");
      if (state.route === taskId) renderTaskPage(taskId).catch(reportProblem);
      else api(`/v1/tasks/${taskId}`).then(updateTask, reportProblem);
      if (update.status === "failed") awaitRefund(taskId).catch(reportProblem);
      else loadAccount().catch(reportProblem);
    }
  });
  source.addEventListener("error", () => {
    if (source.readyState === EventSource.CLOSED) { // refused (e.g. the token expired): start over
      state.streams.delete(taskId);
      setTimeout(() => { if (state.route === "home" || state.route === taskId) follow(taskId); }, 1000);
    }
  });
}

function closeStreams() {
  for (const source of state.streams.values()) source?.close();
  state.streams.clear();
}

// ---- one task's page -------------------------------------------------------------------------------

function renderSummary(task) {
  const title = task.title || task.url;
  $("task-title").textContent = title;
  document.title = `${title} · mediatasks`;
  const parts = [
    h("p", { class: "meta" }, `${task.platform} · ${OUTPUT_NAMES[task.output_type]} · `,
      h("span", { class: `status status-${task.status}` }, task.status), ` · attempts: ${task.attempts}`),
    h("p", { class: "meta" }, "Link: ", h("a", { href: task.url, rel: "noopener noreferrer" }, task.url)),
    h("div", { class: "progress" },
      h("progress", { max: 100, value: task.progress, "aria-label": "Progress" }),
      h("span", { class: "percent" }, `${task.progress}%`)),
    task.error ? h("p", { class: "failure" }, failureText(task)) : null,
  ];
  if (task.status === "failed") {
    const price = state.prices[task.output_type];
    const retry = h("button", { type: "button", id: "retry" }, `Retry (costs ${credits(price ?? "?")})`);
    retry.addEventListener("click", () => retryTask(task.task_id, retry));
    parts.push(retry);
  }
  $("task-summary").replaceChildren(...parts.filter(Boolean));
}

async function retryTask(taskId, button) {
  button.setAttribute("aria-busy", "true");
  try {
    const before = state.tasks.get(taskId)?.updated_at;
    await api(`/v1/tasks/${taskId}/retry`, { method: "POST" });
    $("task-action-error").textContent = "";
    say("Retrying the task.");
    for (let i = 0; i < 50; i += 1) { // the read model shows the retry a moment after it is accepted
      const task = await api(`/v1/tasks/${taskId}`);
      if (task.updated_at !== before) break;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    loadAccount();
    await renderTaskPage(taskId);
    $("task-title").focus();
  } catch (failure) {
    $("task-action-error").textContent = failure.code === "insufficient_credits"
      ? submitError(failure) : `Could not retry: ${failure.message}`;
    button.removeAttribute("aria-busy");
  }
}

async function renderTaskPage(taskId) {
  let task, history;
  try {
    [task, history] = await Promise.all([api(`/v1/tasks/${taskId}`), api(`/v1/tasks/${taskId}/history`)]);
  } catch (failure) {
    $("task-title").textContent = failure.status === 404 ? "No such task" : "Could not load the task";
    $("task-summary").replaceChildren(h("p", { class: "error" }, failure.message));
    return;
  }
  if (state.route !== taskId) return;
  state.tasks.set(taskId, task);
  renderSummary(task);
  $("timeline").replaceChildren(...history.events.map((event) => h("li", { "data-type": event.type },
    when(event.timestamp), EVENT_WORDS[event.type] || event.type, eventDetail(event))));
  const result = task.status === "extracted" ? task.result || {} : {};
  const tracks = result.subtitles || [];
  $("subtitles").hidden = tracks.length === 0;
  $("video").hidden = !result.video;
  $("audio").hidden = !result.audio;
  if (tracks.length || result.video || result.audio) {
    const token = await api(`/v1/tasks/${taskId}/stream-token`, { method: "POST" });
    const query = `access_token=${encodeURIComponent(token.access_token)}`;
    if (tracks.length) renderSubtitles(taskId, tracks, query);
    if (result.video) {
      $("video-player").src = `/v1/tasks/${taskId}/video?${query}`;
      $("download-video").href = `/v1/tasks/${taskId}/video?${query}`;
    }
    if (result.audio) {
      $("audio-player").src = `/v1/tasks/${taskId}/audio?${query}`;
      $("download-audio").href = `/v1/tasks/${taskId}/audio?${query}`;
    }
  } else {
    $("video-player").removeAttribute("src");
  }
  if (!TERMINAL.has(task.status)) follow(taskId);
}

function eventDetail(event) {
  const d = event.data || {};
  if (event.type === "Processing") return ` — ${d.stage ?? ""} ${d.progress ?? ""}%`;
  if (event.type === "Downloading") return ` — attempt ${d.attempt ?? ""}`;
  if (event.type === "Failed") return ` — attempt ${d.attempt}: ${ERROR_WORDS[d.code] || d.message || d.code || ""}`;
  if (event.type === "Started" || event.type === "Retried") return d.credits ? ` — ${credits(d.credits)} charged` : "";
  if (event.type === "Refunded") return d.credits ? ` — ${credits(d.credits)} refunded` : "";
  return "";
}

function renderSubtitles(taskId, tracks, query) {
  const select = $("subtitle-lang");
  const chosen = select.value && tracks.some((t) => t.lang === select.value) ? select.value : tracks[0].lang;
  select.replaceChildren(...tracks.map((t) => h("option", { value: t.lang, selected: t.lang === chosen },
    `${t.lang}${t.kind === "automatic" ? " (automatic)" : ""}`)));
  const showLanguage = async () => {
    const lang = encodeURIComponent(select.value);
    for (const format of ["vtt", "srt", "txt"]) {
      $(`download-${format}`).href = `/v1/tasks/${taskId}/subtitles?lang=${lang}&format=${format}&${query}`;
      $(`download-${format}`).setAttribute("download", `${taskId}.${select.value}.${format}`);
    }
    const response = await api(`/v1/tasks/${taskId}/subtitles?lang=${lang}&format=vtt`, { raw: true });
    $("subtitle-preview").textContent = await response.text();
  };
  select.onchange = () => showLanguage().catch(reportProblem);
  return showLanguage();
}

// ---- webhook endpoints and their deliveries -------------------------------------------------------

function attemptText(attempt) {
  const answer = attempt.status_code === null ? `no answer (${attempt.error || "error"})` : `HTTP ${attempt.status_code}`;
  return `#${attempt.number}: ${answer}, ${Math.round(attempt.latency_ms)} ms`;
}

function deliveryRow(endpointId, delivery) {
  const redeliver = h("button", { type: "button", class: "quiet redeliver",
    "aria-label": `Redeliver ${delivery.event_type} (${delivery.id})` }, "Redeliver");
  redeliver.addEventListener("click", () => redeliverOne(endpointId, delivery.id, redeliver));
  return h("tr", { class: "delivery", "data-delivery-id": delivery.id, "data-status": delivery.status },
    h("td", {}, when(delivery.created_at)),
    h("td", { class: "event" }, delivery.event_type),
    h("td", { class: "status" }, delivery.status),
    h("td", { class: "attempts" }, delivery.attempts.length ? delivery.attempts.map(attemptText).join("; ") : "none yet"),
    h("td", { class: "next" }, delivery.next_attempt_at ? when(delivery.next_attempt_at) : "—"),
    h("td", {}, redeliver));
}

async function endpointCard(endpoint) {
  const page = await api(`/v1/webhooks/${endpoint.id}/deliveries?limit=20`);
  const standing = endpoint.enabled ? "enabled" : `disabled: ${endpoint.disabled_reason || "by its owner"}`;
  return h("li", { class: "webhook", "data-webhook-id": endpoint.id },
    h("h3", {}, endpoint.url),
    h("p", { class: "meta" }, `${endpoint.event_types.join(", ")} · `,
      h("span", { class: endpoint.enabled ? "status" : "status status-failed" }, standing),
      endpoint.description ? ` · ${endpoint.description}` : ""),
    page.deliveries.length === 0 ? h("p", { class: "hint" }, "No deliveries yet.") :
      h("div", { class: "scroll" }, h("table", { class: "deliveries" },
        h("caption", {}, `Deliveries to ${endpoint.url}`),
        h("thead", {}, h("tr", {}, ...["When", "Event", "Status", "Attempts", "Next retry", "Action"]
          .map((name) => h("th", { scope: "col" }, name)))),
        h("tbody", {}, ...page.deliveries.map((d) => deliveryRow(endpoint.id, d))))));
}

async function loadWebhooks() {
  const { webhooks } = await api("/v1/webhooks");
  const cards = await Promise.all(webhooks.map(endpointCard));
  if (state.route !== "home") return;
  $("webhook-list").replaceChildren(...cards);
  $("webhooks-empty").hidden = webhooks.length > 0;
}

async function redeliverOne(endpointId, deliveryId, button) {
  button.setAttribute("aria-busy", "true");
  try {
    await api(`/v1/webhooks/${endpointId}/deliveries/${encodeURIComponent(deliveryId)}/redeliver`, { method: "POST" });
    $("webhooks-error").textContent = "";
    say("Delivery queued again.");
    await loadWebhooks();
  } catch (failure) {
    $("webhooks-error").textContent = failure.code === "webhook_disabled"
      ? `This endpoint is disabled (${failure.details?.disabled_reason || "by its owner"}); enable it first.`
      : `Could not redeliver: ${failure.message}`;
    button.removeAttribute("aria-busy");
  }
}

// ---- start -----------------------------------------------------------------------------------------

async function start() {
  state.prices = (await (await fetch("/web/config.json")).json()).prices;
  renderOutputTypes();
  $("signin-form").addEventListener("submit", signIn);
  $("submit-form").addEventListener("submit", submitTask);
  $("sign-out").addEventListener("click", () => signOut());
  $("webhooks-refresh").addEventListener("click", () => loadWebhooks().catch(reportProblem));
  window.addEventListener("hashchange", route);
  route();
  document.body.dataset.ready = "true";
}

start();
