"""`talkinghead app`: a local web page over the command line's own functions (FastAPI + one small HTML page).

Pick a presenter, type text (and a voice) or upload speech, watch the progress and the video; upload a video and see
the onboarding `check` report, then add it as a presenter; open each presenter's report (reports/index.html).

- Bound to 127.0.0.1 unless ``app.host`` says otherwise: the page can read and write the project.
- Uploads stream to disk and are refused once they pass ``app.max_upload_mb`` (or at once, when the declared
  Content-Length is already larger), so a 2 GB upload never sits in memory or on disk.
- Every job (speak, check, add-presenter) runs on one worker thread, one after another: two requests at once queue
  (the page shows the queue position) and each job writes only into its own folder, so nothing is shared.
- Bad input gives the command line's own one-line errors (errors.InputError), with upload folders left out.
"""


import argparse
import itertools
import queue
import re
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .errors import InputError, describe

UPLOAD_NAME = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class AppParams:
    """params.yaml's ``app`` group."""

    host: str
    port: int
    max_upload_mb: int
    check_samples: int


@dataclass
class Job:
    id: str
    kind: str  # speak | check | add
    run: Callable[["Job"], dict]
    state: str = "queued"  # queued | running | done | error
    progress: float = 0.0
    frames: int = 0
    message: str = ""
    result: dict = field(default_factory=dict)
    created: float = field(default_factory=time.time)

    def public(self, position: int) -> dict:
        return {"id": self.id, "kind": self.kind, "state": self.state, "progress": round(self.progress, 4),
                "frames": self.frames, "message": self.message, "result": self.result,
                "queue_position": position}


class Worker:
    """One thread running jobs in arrival order: heavy work never runs twice at once."""

    def __init__(self) -> None:
        self.jobs: dict[str, Job] = {}
        self.order: list[str] = []
        self.lock = threading.Lock()
        self.queue: queue.Queue[Job] = queue.Queue()
        self._ids = itertools.count(1)
        self.thread = threading.Thread(target=self._loop, name="app-worker", daemon=True)
        self.thread.start()

    def submit(self, kind: str, run: Callable[[Job], dict]) -> Job:
        with self.lock:
            job = Job(f"{next(self._ids):04d}", kind, run)
            self.jobs[job.id] = job
            self.order.append(job.id)
        self.queue.put(job)
        return job

    def status(self, job_id: str) -> dict | None:
        with self.lock:
            job = self.jobs.get(job_id)
            if job is None:
                return None
            waiting = [j for j in self.order if self.jobs[j].state in ("queued", "running")]
            position = waiting.index(job_id) if job_id in waiting else 0  # 0: running or finished
            return job.public(position)

    def _loop(self) -> None:
        while True:
            job = self.queue.get()
            job.state = "running"
            try:
                job.result = job.run(job)
                job.progress = 1.0
                job.state = "done"
            except InputError as exc:  # bad input: the command line's one-line message
                job.message = f"error: {exc}"
                job.state = "error"
            except Exception as exc:  # a bug: shown, and the page keeps working
                job.message = f"error: {describe(exc)}"
                job.state = "error"


def clean_message(message: str, folder: Path) -> str:
    """An error naming an upload's own file, not the temporary folder it was saved in."""
    return message.replace(f"{folder}/", "")


class App:
    """The state behind the page: the project, the scratch folder and the worker."""

    def __init__(self, root: Path, params: AppParams, overrides: tuple[str, ...] = (), work: Path | None = None):
        self.root = root.resolve()
        self.params = params
        self.overrides = overrides
        self.work = Path(work or tempfile.mkdtemp(prefix="talkinghead-app-")).resolve()
        (self.work / "uploads").mkdir(parents=True, exist_ok=True)
        (self.work / "jobs").mkdir(parents=True, exist_ok=True)
        self.worker = Worker()
        self._upload_ids = itertools.count(1)
        self._upload_lock = threading.Lock()

    # -- uploads ------------------------------------------------------------------------------------------------
    def new_upload(self, filename: str) -> tuple[str, Path]:
        name = UPLOAD_NAME.sub("_", Path(filename or "upload").name).strip("._") or "upload"
        with self._upload_lock:
            upload_id = f"u{next(self._upload_ids):04d}"
        folder = self.work / "uploads" / upload_id
        folder.mkdir()
        return upload_id, folder / name

    def upload_path(self, upload_id: str) -> Path:
        if not re.fullmatch(r"u\d{4,}", upload_id or ""):
            raise InputError(None, f"unknown upload {upload_id!r}")
        files = list((self.work / "uploads" / upload_id).glob("*"))
        if not files:
            raise InputError(None, f"unknown upload {upload_id!r}; upload the file again")
        return files[0]

    # -- jobs ---------------------------------------------------------------------------------------------------
    def speak_job(self, presenter: str, text: str | None, voice: str | None, upload: str | None) -> Job:
        from .params import apply_overrides, load_config, load_params
        from .speak import speak
        from .synthesis import check_presenter
        from .tts import TextSpeech, TtsParams

        params_file = self.root / "params.yaml"
        # the quick checks answer the request itself (as the command line does before its heavy imports)
        check_presenter(presenter, self.root)
        if upload:
            speech: Any = self.upload_path(upload)
        else:
            values = apply_overrides(load_params(params_file), self.overrides, params_file)
            tts = load_config(TtsParams, "tts", params_file, values)
            speech = TextSpeech(text or "", voice or tts.voice, tts, "text")
            speech.check()

        def run(job: Job) -> dict:
            folder = self.work / "jobs" / job.id
            folder.mkdir()
            out = folder / f"{presenter}.mp4"

            def progress(frames: int, fraction: float) -> None:
                job.frames, job.progress = frames, fraction

            try:
                result = speak(presenter, speech, out, root=self.root, progress=False, overrides=self.overrides,
                               save_speech=None if upload else folder / "speech.wav", on_progress=progress)
            except InputError as exc:
                raise InputError(None, clean_message(str(exc), speech.parent if upload else folder)) from None
            files = {"video": f"/files/{job.id}/{out.name}"}
            if not upload:
                files["speech"] = f"/files/{job.id}/speech.wav"
            return {**files, "frames": result.frames, "seconds": round(result.seconds, 2),
                    "frames_per_s": round(result.frames_per_s, 2), "first_frame_s": round(result.first_frame_s, 2),
                    "size": f"{result.width}x{result.height}"}

        return self.worker.submit("speak", run)

    def check_job(self, upload: str) -> Job:
        from .onboard import check_video, extract_params, format_report

        video = self.upload_path(upload)

        def run(job: Job) -> dict:
            try:
                report = check_video(video, extract_params(self.root), n_samples=self.params.check_samples)
            except InputError as exc:
                raise InputError(None, clean_message(str(exc), video.parent)) from None
            return {"usable": report.usable, "report": clean_message(format_report(report), video.parent),
                    "reasons": report.reasons, "warnings": report.warnings}

        return self.worker.submit("check", run)

    def add_job(self, upload: str, name: str) -> Job:
        from .onboard import add_presenter

        video = self.upload_path(upload)

        def run(job: Job) -> dict:
            try:
                return {"message": add_presenter(name, video, root=self.root)}
            except InputError as exc:
                raise InputError(None, clean_message(str(exc), video.parent)) from None

        return self.worker.submit("add", run)

    def presenters(self) -> list[dict]:
        from .synthesis import check_presenter, known_presenters

        out = []
        for name in known_presenters(self.root):
            try:
                check_presenter(name, self.root)
                ready, why = True, ""
            except InputError as exc:
                ready, why = False, exc.reason
            # reports/index.html (talkinghead report) has a section per presenter, anchored by name
            index = self.root / "reports" / "index.html"
            listed = index.is_file() and f'id="{name}"' in index.read_text(errors="replace")
            out.append({"name": name, "ready": ready, "why": why,
                        "report": f"/reports/index.html#{name}" if listed else None})
        return out


def create_app(state: App):
    """The FastAPI application over ``state``."""
    from fastapi import FastAPI, Request
    from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
    from fastapi.staticfiles import StaticFiles

    api = FastAPI(title="talkinghead", docs_url=None, redoc_url=None)
    limit = state.params.max_upload_mb * 1024 * 1024

    def refused(exc: InputError, status: int = 400) -> JSONResponse:
        return JSONResponse({"error": f"error: {exc}"}, status_code=status)

    @api.get("/", response_class=HTMLResponse)
    def page() -> str:
        return PAGE.replace("{{MAX_MB}}", str(state.params.max_upload_mb))

    @api.get("/api/presenters")
    def presenters() -> list[dict]:
        return state.presenters()

    @api.get("/api/voices")
    def voices() -> dict:
        from .params import apply_overrides, load_config, load_params
        from .tts import TtsParams, available_voices

        params_file = state.root / "params.yaml"
        tts = load_config(TtsParams, "tts", params_file,
                          apply_overrides(load_params(params_file), state.overrides, params_file))
        listed = sorted(available_voices(), key=lambda v: (v.engine != "flite", not v.name.startswith("en"), v.name))
        return {"default": tts.voice, "voices": [{"name": v.name, "description": v.description} for v in listed]}

    @api.post("/api/upload")
    async def upload(request: Request, filename: str = "upload"):
        """The raw request body is the file (no multipart): written to disk as it arrives, refused at the limit."""
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return refused(InputError(filename, f"too large ({int(declared) / 2**20:.0f} MB; the limit is "
                                                f"app.max_upload_mb = {state.params.max_upload_mb} MB)"), 413)
        upload_id, path = state.new_upload(filename)
        size = 0
        try:
            with open(path, "wb") as f:
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > limit:
                        raise InputError(filename, f"too large (more than app.max_upload_mb = "
                                                   f"{state.params.max_upload_mb} MB); upload refused")
                    f.write(chunk)
        except InputError as exc:
            shutil.rmtree(path.parent, ignore_errors=True)
            return refused(exc, 413)
        if size == 0:
            shutil.rmtree(path.parent, ignore_errors=True)
            return refused(InputError(filename, "empty upload"))
        return {"upload": upload_id, "name": path.name, "bytes": size}

    def queued(make_job) -> dict | JSONResponse:
        """Queue the job ``make_job()`` builds and return its status; a bad request is refused with the CLI's line."""
        try:
            job = make_job()
        except InputError as exc:
            return refused(exc)
        return state.worker.status(job.id)

    @api.post("/api/speak")
    async def speak(request: Request):
        body = await request.json()
        return queued(lambda: state.speak_job(str(body.get("presenter") or ""), body.get("text"),
                                              body.get("voice") or None, body.get("upload") or None))

    @api.post("/api/check")
    async def check(request: Request):
        body = await request.json()
        return queued(lambda: state.check_job(str(body.get("upload") or "")))

    @api.post("/api/add-presenter")
    async def add(request: Request):
        body = await request.json()
        return queued(lambda: state.add_job(str(body.get("upload") or ""), str(body.get("name") or "")))

    @api.get("/api/jobs/{job_id}")
    def job(job_id: str):
        status = state.worker.status(job_id)
        return status if status is not None else JSONResponse({"error": "unknown job"}, status_code=404)

    @api.get("/files/{job_id}/{name}")
    def files(job_id: str, name: str):
        path = state.work / "jobs" / job_id / name
        if not re.fullmatch(r"\d{4,}", job_id) or "/" in name or not path.is_file():
            return JSONResponse({"error": "no such file"}, status_code=404)
        return FileResponse(path)

    reports = state.root / "reports"
    reports.mkdir(exist_ok=True)
    api.mount("/reports", StaticFiles(directory=reports, html=True), name="reports")
    return api


def serve(state: App, host: str, port: int):
    """A started uvicorn server in a background thread (for tests); ``.should_exit = True`` stops it."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(create_app(state), host=host, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="app-server", daemon=True)
    thread.start()
    while not server.started and thread.is_alive():
        time.sleep(0.05)
    return server


def app_main(argv: list[str] | None = None) -> int:
    """CLI: talkinghead app [--project DIR] [--host H] [--port N] [-S key=value]."""
    from .params import apply_overrides, load_config, load_params

    parser = argparse.ArgumentParser(prog="talkinghead app", description=__doc__.split("\n")[0])
    parser.add_argument("--project", type=Path, default=Path("."), metavar="DIR", help="project folder (default: here)")
    parser.add_argument("--host", help="address to listen on (default: params.yaml app.host, 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default: params.yaml app.port)")
    parser.add_argument("-S", "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a params.yaml value for every job of this server")
    args = parser.parse_args(argv)
    params_file = args.project / "params.yaml"
    values = apply_overrides(load_params(params_file), args.overrides, params_file)
    params = load_config(AppParams, "app", params_file, values)
    host, port = args.host or params.host, args.port or params.port
    state = App(args.project, params, tuple(args.overrides))
    import uvicorn

    print(f"talkinghead app: http://{host}:{port}/  (project {state.root}; scratch {state.work}; Ctrl-C stops)")
    uvicorn.run(create_app(state), host=host, port=port, log_level="warning")
    return 0


PAGE = r"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>talkinghead</title>
<style>
 body{font-family:system-ui,sans-serif;margin:0;background:#f4f5f7;color:#222}
 header{background:#243447;color:#fff;padding:10px 20px}
 header h1{font-size:20px;margin:0}
 main{display:grid;grid-template-columns:1fr 1fr;gap:16px;padding:16px}
 section{background:#fff;border-radius:8px;padding:14px 18px;box-shadow:0 1px 3px #0002}
 h2{font-size:17px;margin:0 0 10px}
 label{display:block;margin:8px 0 3px;font-weight:600;font-size:14px}
 textarea{width:100%;height:90px;box-sizing:border-box}
 select,input,button{font-size:14px}
 button{margin-top:10px;padding:6px 14px;background:#2b6cb0;color:#fff;border:0;border-radius:4px;cursor:pointer}
 progress{width:100%;margin-top:10px}
 video{width:100%;max-height:420px;background:#000;margin-top:10px}
 pre{background:#f0f0f0;padding:8px;white-space:pre-wrap;font-size:13px}
 .error{color:#b00020;font-weight:600;white-space:pre-wrap}
 .ok{color:#176b2c;font-weight:600}
 li{margin:3px 0}
</style></head>
<body><header><h1>talkinghead &mdash; local app</h1></header>
<main>
<section id="speak">
 <h2>Make a presenter speak</h2>
 <label for="presenter">Presenter</label><select id="presenter"></select>
 <label><input type="radio" name="mode" value="text" checked> Type text</label>
 <textarea id="text" placeholder="What should the presenter say?"></textarea>
 <label for="voice">Voice</label><select id="voice"></select>
 <label><input type="radio" name="mode" value="audio"> or upload speech (wav, mp3, m4a, flac; up to {{MAX_MB}} MB)</label>
 <input type="file" id="audio" accept="audio/*,video/*">
 <br><button id="go">Make video</button>
 <progress id="speak-progress" max="1" value="0" hidden></progress>
 <div id="speak-status"></div>
 <video id="video" controls hidden></video>
 <div id="download"></div>
</section>
<section id="onboard">
 <h2>Onboard a presenter</h2>
 <label for="video-file">Video of the presenter speaking (up to {{MAX_MB}} MB)</label>
 <input type="file" id="video-file" accept="video/*">
 <br><button id="check">Check video</button>
 <progress id="check-progress" max="1" value="0" hidden></progress>
 <div id="check-status"></div>
 <pre id="check-report" hidden></pre>
 <div id="add" hidden><label for="new-name">Name</label><input id="new-name" placeholder="e.g. alice">
  <button id="add-go">Add presenter</button><div id="add-status"></div></div>
 <h2 style="margin-top:18px">Presenters and their reports</h2>
 <ul id="presenters"></ul>
 <p><a href="/reports/index.html" target="_blank">All reports (reports/index.html)</a></p>
</section>
</main>
<script>
const $ = id => document.getElementById(id);
async function json(url, options) {
  const r = await fetch(url, options); const body = await r.json();
  if (!r.ok) throw new Error(body.error || r.statusText); return body;
}
async function upload(file, status) {
  status.textContent = `uploading ${file.name} (${(file.size / 1048576).toFixed(1)} MB)...`;
  return json(`/api/upload?filename=${encodeURIComponent(file.name)}`, {method: "POST", body: file});
}
async function follow(job, bar, status) {
  bar.hidden = false;
  while (true) {
    job = await json(`/api/jobs/${job.id}`);
    bar.value = job.progress;
    status.textContent = job.state === "queued" ? `queued (${job.queue_position} ahead of it)...`
      : job.state === "running" ? `working: ${Math.round(job.progress * 100)}% (${job.frames} frames)` : "";
    if (job.state === "done" || job.state === "error") return job;
    await new Promise(r => setTimeout(r, 500));
  }
}
function fail(el, e) { el.className = "error"; el.textContent = e.message || e; }
async function loadLists() {
  const [people, voices] = await Promise.all([json("/api/presenters"), json("/api/voices")]);
  $("presenter").innerHTML = people.map(p =>
    `<option value="${p.name}" ${p.ready ? "" : "disabled"}>${p.name}${p.ready ? "" : " (not trained yet)"}</option>`).join("");
  const ready = people.find(p => p.ready); if (ready) $("presenter").value = ready.name;
  $("voice").innerHTML = voices.voices.map(v => `<option value="${v.name}">${v.name} (${v.description})</option>`).join("");
  $("voice").value = voices.default;
  $("presenters").innerHTML = people.map(p => `<li><b>${p.name}</b>: ${p.ready ? "ready" : p.why}` +
    (p.report ? ` &mdash; <a href="${p.report}" target="_blank">report</a>` : "") + "</li>").join("");
}
$("go").onclick = async () => {
  const status = $("speak-status"); status.className = ""; $("video").hidden = true; $("download").innerHTML = "";
  try {
    const body = {presenter: $("presenter").value};
    if (document.querySelector("input[name=mode]:checked").value === "audio") {
      const file = $("audio").files[0]; if (!file) throw new Error("choose a speech file first");
      body.upload = (await upload(file, status)).upload;
    } else { body.text = $("text").value; body.voice = $("voice").value; }
    const job = await follow(await json("/api/speak", {method: "POST", body: JSON.stringify(body),
                                                        headers: {"Content-Type": "application/json"}}),
                             $("speak-progress"), status);
    if (job.state === "error") throw new Error(job.message);
    const r = job.result;
    status.className = "ok";
    status.textContent = `done: ${r.frames} frames (${r.size}) in ${r.seconds} s, ${r.frames_per_s} frames/s; first frame after ${r.first_frame_s} s`;
    $("video").src = r.video; $("video").hidden = false; $("video").play().catch(() => {});
    $("download").innerHTML = `<a href="${r.video}" download>Download the video</a>` +
      (r.speech ? ` &middot; <a href="${r.speech}" download>Download the speech (WAV)</a>` : "");
  } catch (e) { fail(status, e); }
};
$("check").onclick = async () => {
  const status = $("check-status"); status.className = ""; $("check-report").hidden = true; $("add").hidden = true;
  try {
    const file = $("video-file").files[0]; if (!file) throw new Error("choose a video first");
    const up = await upload(file, status);
    const job = await follow(await json("/api/check", {method: "POST", body: JSON.stringify({upload: up.upload}),
                                                       headers: {"Content-Type": "application/json"}}),
                             $("check-progress"), status);
    if (job.state === "error") throw new Error(job.message);
    $("check-report").textContent = job.result.report; $("check-report").hidden = false;
    status.className = job.result.usable ? "ok" : "error";
    status.textContent = job.result.usable ? "usable: this video can become a presenter" : "not usable: " + job.result.reasons.join("; ");
    if (job.result.usable) { $("add").hidden = false; $("add").dataset.upload = up.upload; }
  } catch (e) { fail(status, e); }
};
$("add-go").onclick = async () => {
  const status = $("add-status"); status.className = "";
  try {
    const job = await follow(await json("/api/add-presenter", {method: "POST", headers: {"Content-Type": "application/json"},
                             body: JSON.stringify({upload: $("add").dataset.upload, name: $("new-name").value})}),
                             $("check-progress"), status);
    if (job.state === "error") throw new Error(job.message);
    status.className = "ok"; status.textContent = job.result.message; loadLists();
  } catch (e) { fail(status, e); }
};
loadLists().catch(e => fail($("speak-status"), e));
</script></body></html>
"""
