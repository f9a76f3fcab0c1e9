// The job page follows the job's status stream (GET /api/v1/status/{id}/events, with the session
// cookie) and updates itself; EventSource reconnects on its own with Last-Event-ID.
const article = document.getElementById("job");
const jobId = article.dataset.jobId;
const createdAt = new Date(article.dataset.createdAt);
const TERMINAL = new Set(["completed", "failed", "cancelled"]);
let endedAt = null;

const $ = (id) => document.getElementById(id);

function formatSeconds(total) {
  const seconds = Math.max(0, Math.round(total));
  const minutes = Math.floor(seconds / 60);
  return minutes ? `${minutes} min ${seconds % 60} s` : `${seconds} s`;
}

function tick() {
  const until = endedAt || new Date();
  $("elapsed").textContent = formatSeconds((until - createdAt) / 1000);
}

function show(status) {
  article.dataset.status = status.status;
  $("status-name").textContent = status.status.charAt(0).toUpperCase() + status.status.slice(1);
  $("status-message").textContent = status.message;
  const queued = status.status === "queued";
  $("queue-position").hidden = !queued || status.queue_position == null;
  if (queued && status.queue_position != null) {
    $("queue-position").textContent = ` · ${status.queue_position} job(s) ahead in the queue`;
  }
  const processing = status.status === "processing";
  $("progress").hidden = !processing;
  $("progress-label").hidden = !processing;
  if (processing) {
    $("progress").value = status.progress || 0;
    $("progress-value").textContent = String(status.progress || 0);
  }
  $("cancel-queued").hidden = !queued;
  $("cancel-running").hidden = !processing;
  if (status.status === "completed") {
    $("progress").value = 100;
    const video = $("video");
    if (video && status.result_url && video.getAttribute("src") !== status.result_url) {
      video.src = status.result_url;
      $("download").href = status.result_url;
    }
    const metrics = $("metrics");
    metrics.replaceChildren();
    for (const [name, value] of Object.entries(status.metrics || {})) {
      if (value == null) continue;
      const term = document.createElement("dt");
      term.textContent = name.replaceAll("_", " ").replace(/^./, (c) => c.toUpperCase());
      const detail = document.createElement("dd");
      detail.textContent = `${Number(value).toFixed(1)} s`;
      metrics.append(term, detail);
    }
    $("result").hidden = false;
  }
  if (status.status === "failed") {
    $("error-message").textContent = status.error_message || "";
    $("failure-reason").textContent = status.failure_reason || "";
    $("failure").hidden = false;
  }
  if (TERMINAL.has(status.status)) {
    endedAt = status.updated_at ? new Date(status.updated_at) : new Date();
    tick();
  }
}

function follow() {
  const source = new EventSource(`/api/v1/status/${encodeURIComponent(jobId)}/events`, { withCredentials: true });
  source.onmessage = (event) => {
    const status = JSON.parse(event.data);
    show(status);
    if (TERMINAL.has(status.status)) source.close();
  };
  source.onerror = () => {
    // EventSource retries by itself; a closed stream after the end is expected.
    if (TERMINAL.has(article.dataset.status)) source.close();
  };
}

show(JSON.parse($("job-status").textContent));
tick();
setInterval(tick, 1000);
if (!TERMINAL.has(article.dataset.status)) follow();
