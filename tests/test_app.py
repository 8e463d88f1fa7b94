"""speak --text (offline voices, spoken chunk by chunk while the video renders), the inference options, and
`talkinghead app`: its API, then its page in headless Chromium (Debian's chromium + chromium-driver), all on
test_speak's tiny generated presenter."""

from __future__ import annotations

import os
import re
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import requests

from talkinghead.audio import read_wav
from talkinghead.cli import main as cli_main
from talkinghead.errors import InputError
from talkinghead.params import apply_overrides, load_params
from talkinghead.speak import speak_main
from talkinghead.tts import TextSpeech, TtsParams, check_voice, chunks
from talkinghead.videoio import VideoWriter, probe

from configs import PARAMS_YAML, project_config
from test_speak import make_trained, project  # noqa: F401  (a fixture)
from webdriver import Browser, find_browser, free_port

TEXT = ("Hello there. This short text is spoken by an offline voice, "
        "then the presenter says it. Every sentence streams on its own!")


# -- text and voices -----------------------------------------------------------------------------------------------

def test_chunks_keep_every_word_in_order_and_bound_each_chunk():
    text = " ".join(["One two three four five."] * 30) + " " + " ".join(["word"] * 200)  # ends in a 200-word run
    parts = chunks(text, first_words=4, chunk_words=20)
    assert " ".join(parts).split() == text.split()
    assert len(parts[0].split()) == 4  # the first chunk is short: the first frame comes soon
    assert max(len(p.split()) for p in parts) <= 20
    assert all(p.endswith(".") for p in parts[1:] if "word" not in p)  # sentences are not cut while they fit


def test_unknown_voice_lists_the_voices():
    assert check_voice("flite:slt") == "flite:slt" and check_voice("en-us+f2") == "en-us+f2"
    for bad in ("klingon", "flite:nobody", "en-us+nope", "flite:slt+f2"):
        with pytest.raises(InputError, match=rf"unknown voice '{re.escape(bad)}'.*flite:slt.*en-us.*talkinghead voices"):
            check_voice(bad)


def test_text_speech_streams_chunks_of_real_speech():
    tts = project_config(TtsParams, "tts")
    speech = TextSpeech(TEXT, "en-us", tts)
    parts = speech.check()
    pieces = list(speech.stream(parts))
    assert len(pieces) == len(parts) >= 2
    assert all(p.dtype == np.float32 and len(p) > 16000 // 4 and np.abs(p).max() > 0.05 for p in pieces)


@pytest.mark.parametrize("argv, message", [
    (["--text", "   "], "error: --text: empty text: nothing to say"),
    (["--text", "?! ..."], "error: --text: no words to say"),
    (["--text-file", "empty.txt"], "error: empty.txt: empty text: nothing to say"),
    (["--text-file", "missing.txt"], "error: missing.txt: no such file"),
    (["--text", "hi", "--voice", "klingon"], "error: unknown voice 'klingon'; voices here: flite:"),
    (["--text", "hi", "-S", "speak.crf=best"], "error: params.yaml: speak.crf must be int, not 'best'"),
    (["--text", "hi", "-S", "speak.crff=18"], "error: params.yaml: -S speak.crff: no key 'crff' in speak"),
    (["--text", "hi", "--mouth-margin", "-1"], "error: --mouth-margin -1.0: expected a fraction"),
    (["--text", "hi", "--batch-size", "0"], "error: --batch-size 0: expected at least 1"),
    (["--text", "hi", "--size", "5"], "error: --size 5: expected an output height between 16 and 4096"),
])
def test_text_and_option_errors_are_one_line_before_any_work(project, capsys, argv, message):
    make_trained(project)  # placeholders: every check here must come before anything is loaded
    (project / "empty.txt").write_text("\n  \n")
    code = speak_main(["--presenter", "alice", "--out", "out.mp4"] + argv)
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith(message), err
    assert not (project / "out.mp4").exists()


def test_project_option_and_version_and_voice_list(project, capsys, tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    os.chdir(elsewhere)
    code = speak_main(["--project", str(project), "--presenter", "bob", "--text", "hi", "--out", "x.mp4"])
    assert code == 2 and "known presenters: alice" in capsys.readouterr().err  # the project's, not this folder's
    code = speak_main(["--presenter", "alice", "--text", "hi", "--out", "x.mp4"])  # no project here
    assert code == 2 and "params.yaml: missing: --project must name" in capsys.readouterr().err
    assert speak_main(["--voice", "list"]) == 0
    listing = capsys.readouterr().out
    assert "flite:slt" in listing and "\nen-us " in listing and "+f2" not in listing.split("variants")[0]
    with pytest.raises(SystemExit) as done:
        cli_main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.startswith("talkinghead 0.")


def test_overrides_need_an_existing_key():
    params = load_params(PARAMS_YAML)
    out = apply_overrides(params, ["speak.paste.levels=2", "tts.voice=en-us"], PARAMS_YAML)
    assert out["speak"]["paste"]["levels"] == 2 and out["tts"]["voice"] == "en-us"
    assert params["speak"]["paste"]["levels"] != 2  # a copy: the loaded params are untouched
    for item, match in (("speek.crf=1", "no key 'speek' in params.yaml"), ("speak.paste=1", "a group"),
                        ("speak.crf", "expected KEY=VALUE")):
        with pytest.raises(InputError, match=match):
            apply_overrides(params, [item], PARAMS_YAML)


def test_writer_takes_audio_chunk_by_chunk_and_keeps_only_what_is_not_encoded(tmp_path):
    rate, fps = 16000, 25
    out = tmp_path / "streamed.mp4"
    with VideoWriter(out, fps, 32, 32, audio=np.zeros(0, np.float32), audio_rate=rate, threaded=False) as writer:
        for k in range(20):  # 20 chunks of 0.4 s: 10 frames each
            writer.add_audio(np.full(int(0.4 * rate), 0.1 * np.sin(k), np.float32))
            writer.write(np.zeros((10, 32, 32, 3), np.uint8))
            assert len(writer.audio) <= int(0.4 * rate) + rate // fps  # encoded audio is dropped: memory flat
    info = probe(out)
    assert info["video"]["frames"] == 200 and abs(info["audio"]["duration_s"] - 8.0) <= 2 / fps


# -- speak --text end to end ---------------------------------------------------------------------------------------

@pytest.mark.slow
def test_speak_text_end_to_end(tiny_presenter, tmp_path, capsys, monkeypatch):
    """Several chunks (the first alone), rendered from another folder with --project, resized, with the speech saved:
    the video is as long as the speech, which is its audio track."""
    from talkinghead.audio import decode_audio, rms_dbfs

    monkeypatch.chdir(tmp_path)
    code = speak_main(["--project", str(tiny_presenter), "--presenter", "tiny", "--text", TEXT, "--voice", "en-us+f2",
                       "--save-speech", "said.wav", "--out", "said.mp4", "--size", "96", "--batch-size", "7",
                       "-S", "tts.first_chunk_words=2", "-S", "tts.chunk_words=8", "--device", "cpu", "--quiet"])
    out = capsys.readouterr().out
    assert code == 0 and "first frame after" in out, out
    speech, rate = read_wav("said.wav")
    seconds = len(speech) / rate
    info = probe("said.mp4")
    assert (info["video"]["width"], info["video"]["height"]) == (96, 96)
    assert abs(info["video"]["frames"] - seconds * 25) <= 1  # no drift over the chunks
    assert abs(info["audio"]["duration_s"] - seconds) <= 2 / 25
    heard = decode_audio("said.mp4", 16000)
    assert abs(rms_dbfs(heard) - rms_dbfs(speech)) < 1.5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["said.mp4", "said.wav"]  # no temp files left


# -- the app -------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def app_server(tiny_presenter, tmp_path_factory):
    """`talkinghead app` on the tiny project, uploads limited to 1 MB, on a free local port."""
    import dataclasses

    from talkinghead.app import App, AppParams, serve

    params = dataclasses.replace(project_config(AppParams, "app"), max_upload_mb=1, check_samples=8)
    state = App(tiny_presenter, params, ("tts.voice=en-us",), work=tmp_path_factory.mktemp("app"))
    port = free_port()
    server = serve(state, "127.0.0.1", port)
    assert server.started
    yield f"http://127.0.0.1:{port}", state
    server.should_exit = True


def finish(base: str, job: dict, timeout: float = 300) -> dict:
    deadline = time.time() + timeout
    while job["state"] in ("queued", "running") and time.time() < deadline:
        time.sleep(0.2)
        job = requests.get(f"{base}/api/jobs/{job['id']}", timeout=10).json()
    return job


@pytest.mark.slow
def test_app_uploads_are_limited_and_checked_like_the_cli(app_server, tiny_presenter, tmp_path):
    base, state = app_server
    huge = requests.post(f"{base}/api/upload?filename=big.mp4", data=b"", timeout=10,
                         headers={"Content-Length": str(2 * 2**30)})  # declared 2 GB: refused before reading
    assert huge.status_code == 413 and "big.mp4: too large (2048 MB" in huge.json()["error"]

    def stream():  # undeclared length (chunked): refused once 1 MB has arrived
        for _ in range(64):
            yield b"\0" * 65536

    over = requests.post(f"{base}/api/upload?filename=stream.mp4", data=stream(), timeout=30)
    assert over.status_code == 413 and "stream.mp4: too large" in over.json()["error"]
    assert list((state.work / "uploads").iterdir()) == []  # nothing kept of either

    (tmp_path / "notes.mp4").write_bytes(b"not a video at all " * 100)
    up = requests.post(f"{base}/api/upload?filename=notes.mp4", data=(tmp_path / "notes.mp4").read_bytes(),
                       timeout=10).json()
    job = finish(base, requests.post(f"{base}/api/check", json={"upload": up["upload"]}, timeout=10).json())
    from talkinghead.onboard import check_video, extract_params

    with pytest.raises(InputError) as cli:
        check_video(tmp_path / "notes.mp4", extract_params(tiny_presenter))
    reason = cli.value.reason.replace(f"{tmp_path}/", "")  # the app names the upload, not its scratch folder
    assert job["state"] == "error" and job["message"] == f"error: notes.mp4: {reason}"

    up = requests.post(f"{base}/api/upload?filename=clip.mp4", timeout=10,
                       data=(tiny_presenter / "data/raw/tiny/video.mp4").read_bytes()).json()
    job = finish(base, requests.post(f"{base}/api/add-presenter", json={"upload": up["upload"], "name": "Bad Name"},
                                     timeout=10).json())
    assert job["state"] == "error" and job["message"].startswith("error: Bad Name: bad presenter name")
    assert load_params(tiny_presenter / "params.yaml")["presenters"] == ["tiny"]  # nothing added

    bad = requests.post(f"{base}/api/speak", json={"presenter": "tiny", "text": " "}, timeout=10)
    assert bad.status_code == 400 and bad.json()["error"] == "error: text: empty text: nothing to say"
    bad = requests.post(f"{base}/api/speak", json={"presenter": "nobody", "text": "hi"}, timeout=10)
    assert bad.status_code == 400 and "unknown presenter 'nobody'; known presenters: tiny" in bad.json()["error"]


@pytest.mark.slow
def test_app_queues_two_requests_at_once(app_server):
    base, _ = app_server
    replies: list[dict] = []

    def post(text: str) -> None:
        replies.append(requests.post(f"{base}/api/speak", json={"presenter": "tiny", "text": text}, timeout=30).json())

    threads = [threading.Thread(target=post, args=(t,)) for t in ("First request.", "The second, longer request.")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r["queue_position"] for r in replies) == [0, 1]  # one runs, the other waits its turn
    done = [finish(base, r) for r in replies]
    assert [d["state"] for d in done] == ["done", "done"], done
    videos = {d["result"]["video"] for d in done}
    assert len(videos) == 2  # each job its own file
    for d in done:
        body = requests.get(base + d["result"]["video"], timeout=10).content
        assert body[4:8] == b"ftyp" and d["result"]["frames"] > 10


@pytest.mark.slow
def test_app_speaks_an_uploaded_recording_and_refuses_a_non_audio_one(app_server, tmp_path):
    from talkinghead.audio import write_wav
    from test_speak import tone

    base, _ = app_server
    write_wav(tmp_path / "hello.wav", tone(1.5))
    up = requests.post(f"{base}/api/upload?filename=hello.wav", data=(tmp_path / "hello.wav").read_bytes(),
                       timeout=10).json()
    job = finish(base, requests.post(f"{base}/api/speak", json={"presenter": "tiny", "upload": up["upload"]},
                                     timeout=10).json())
    assert job["state"] == "done" and abs(job["result"]["frames"] - 1.5 * 25) <= 1 and "speech" not in job["result"]
    up = requests.post(f"{base}/api/upload?filename=notes.wav", data=b"plain text, not audio " * 50, timeout=10).json()
    job = finish(base, requests.post(f"{base}/api/speak", json={"presenter": "tiny", "upload": up["upload"]},
                                     timeout=10).json())
    assert job["state"] == "error" and job["message"].startswith("error: notes.wav: ") and "/" not in job["message"]


@pytest.mark.slow
def test_app_lists_presenters_with_their_report(app_server, tiny_presenter):
    base, _ = app_server
    (listed,) = requests.get(f"{base}/api/presenters", timeout=10).json()
    assert listed["name"] == "tiny" and listed["ready"] and listed["report"] is None  # no reports/index.html yet
    index = tiny_presenter / "reports" / "index.html"
    index.write_text('<h2 id="tiny">Presenter tiny</h2>')
    try:
        (listed,) = requests.get(f"{base}/api/presenters", timeout=10).json()
        assert listed["report"] == "/reports/index.html#tiny"
        assert 'id="tiny"' in requests.get(base + listed["report"], timeout=10).text
    finally:
        index.unlink()


BROWSER = find_browser()


@pytest.mark.slow
@pytest.mark.skipif(BROWSER is None, reason="needs Debian's chromium and chromium-driver (make setup installs them)")
def test_page_in_a_real_browser(app_server, tiny_presenter, tmp_path):
    """Type text -> the video plays; upload the presenter's own video -> the check report; upload a non-video ->
    the command line's error. Screenshots go to $TALKINGHEAD_SCREENSHOTS when set."""
    base, _ = app_server
    shots = os.environ.get("TALKINGHEAD_SCREENSHOTS")
    browser = Browser(*BROWSER)
    try:
        browser.get(base)
        assert browser.wait("return document.querySelector('#presenter').value", 20) == "tiny"
        browser.type("#text", "Hello from a real browser. The video should play.")
        browser.click("#go")
        state = browser.wait("const v = document.querySelector('#video');"
                             "return !v.hidden && v.readyState >= 1 ? v.duration : null", 240)
        assert state and state > 1.0, browser.js("return document.querySelector('#speak-status').textContent")
        browser.js("const v = document.querySelector('#video'); v.muted = true; v.currentTime = 0; v.play();")
        playing = browser.wait("const v = document.querySelector('#video');"
                               "return v.readyState >= 2 && v.currentTime > 0.3 && v.videoWidth > 0", 20)
        assert playing, browser.js("const v = document.querySelector('#video'); return [v.readyState, v.currentTime, v.error && v.error.code]")
        assert "done:" in browser.js("return document.querySelector('#speak-status').textContent")
        assert browser.js("return document.querySelector('#download a').getAttribute('href')").endswith(".mp4")
        browser.js("const v = document.querySelector('#video'); v.pause(); v.currentTime = 1.0;")
        if shots:
            browser.screenshot(Path(shots) / "app-speak.png")

        browser.type("#video-file", str(tiny_presenter / "data/raw/tiny/video.mp4"))
        browser.click("#check")
        report = browser.wait("const r = document.querySelector('#check-report');"
                              "return r.hidden ? null : r.textContent", 120)
        assert report and "video:      video.mp4" in report and "usable:" in report, report
        assert "one face:" in report
        if shots:
            browser.screenshot(Path(shots) / "app-check.png")

        (tmp_path / "notes.mp4").write_bytes(b"not a video at all " * 100)
        browser.type("#video-file", str(tmp_path / "notes.mp4"))
        browser.click("#check")
        error = browser.wait("const s = document.querySelector('#check-status');"
                             "return s.className === 'error' ? s.textContent : null", 60)
        assert error and error.startswith("error: notes.mp4:"), error
    finally:
        browser.close()
