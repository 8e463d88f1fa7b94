"""`talkinghead` command line: onboarding, running the pipeline, speaking, benchmarking.

Every subcommand imports its implementation lazily, so `talkinghead --help` stays instant.
Bad input ends with one line `error: <file>: <reason>` on stderr and exit code 2. SIGTERM is handled like Ctrl-C: the
running command stops, its temporary files are removed, and it exits 143 (Ctrl-C: 130).
"""

from __future__ import annotations

import argparse
import signal
import sys

from .errors import InputError

COMMANDS = {
    "add-presenter": "add a presenter from a raw video: talkinghead add-presenter NAME VIDEO [--force]",
    "check": "check whether a video is usable for onboarding (exit 0 usable, 2 not)",
    "repro": "run `dvc repro` (all stages, or the ones named) under one MLflow parent run",
    "preset": "apply a quality preset to a run: talkinghead preset cuda (= dvc exp run -S ... from presets/cuda.yaml)",
    "demo": "run the whole pipeline on the embedded demo presenter and write reports/demo/demo.mp4",
    "speak": "new speech or text -> video: talkinghead speak --presenter NAME --audio FILE | --text TEXT --out OUT.mp4",
    "stream": "live speech -> live video: PCM on stdin -> MPEG-TS on stdout (talkinghead stream --presenter NAME)",
    "voices": "list the offline voices speak --text can use",
    "app": "local web page: speak, onboard, reports (talkinghead app [--port N] [--project DIR])",
    "bench": "time every stage on this machine and print JSON",
    "report": "write reports/index.html from the metrics and plots of every presenter",
}


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread the way Ctrl-C raises KeyboardInterrupt, so that every cleanup on the way out
    runs (atomic.atomic_path, VideoWriter.abort, add-presenter's staging copy) instead of the process vanishing."""


def _raise_terminated(signum, frame) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM ends the process at once
    raise Terminated()


def _repro_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="talkinghead repro", description=COMMANDS["repro"])
    parser.add_argument("targets", nargs="*", help="stages, e.g. extract@demo (default: all)")
    parser.add_argument("--force", action="store_true", help="rerun even if nothing changed")
    args = parser.parse_args(argv)
    from .repro import repro

    return repro(args.targets, ["--force"] if args.force else [])


def _voices_main(argv: list[str]) -> int:
    argparse.ArgumentParser(prog="talkinghead voices", description=COMMANDS["voices"]).parse_args(argv)
    from .tts import format_voices

    print(format_voices())
    return 0


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] in (["--version"], ["-V"]):
        from . import __version__

        print(f"talkinghead {__version__}")
        raise SystemExit(0)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        known = argv and argv[0] not in ("-h", "--help")
        out = sys.stderr if known else sys.stdout
        if known:
            print(f"error: unknown command {argv[0]!r}", file=out)
        print("usage: talkinghead [--version] COMMAND [ARGS]\n\ncommands:", file=out)
        for name, text in COMMANDS.items():
            print(f"  {name:<14} {text}", file=out)
        raise SystemExit(2 if known else 0)
    command, rest = argv[0], argv[1:]
    signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        if command == "add-presenter":
            from .onboard import add_presenter_main as run
        elif command == "check":
            from .onboard import check_main as run
        elif command == "repro":
            run = _repro_main
        elif command == "preset":
            from .presets import preset_main as run
        elif command == "demo":
            from .demo_run import demo_main as run
        elif command == "speak":
            from .speak import speak_main as run
        elif command == "stream":
            from .stream import stream_main as run
        elif command == "voices":
            run = _voices_main
        elif command == "app":
            from .app import app_main as run
        elif command == "bench":
            from .bench import bench_main as run
        else:
            from .report import report_main as run
        code = run(rest)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt as exc:
        terminated = isinstance(exc, Terminated)
        print("terminated" if terminated else "interrupted", file=sys.stderr)
        raise SystemExit(128 + (signal.SIGTERM if terminated else signal.SIGINT)) from None
    raise SystemExit(code or 0)


if __name__ == "__main__":
    main()
