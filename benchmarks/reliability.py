"""Reliability: the long fault suite, with figures (the bounded parts run in CI from tests/reliability/).

    .venv/bin/python benchmarks/reliability.py [--parts media fuzz network sinks kills soak]
                                               [--soak-minutes 30] [--fuzz-seconds 120] [--quick]

Parts:
  media    224 broken inputs made from the shared clips, through `streamclf label` and `streamclf run`
  fuzz     atheris on the config loader and on the demux loop
  network  an RTSP server killed and restarted K times beside a second source; silent, garbage,
           unresolvable and refused sources
  sinks    webhook receiver answering 500s, down, then slow; MQTT broker restarted; a full disk
           under the JSON-lines sink (a real tmpfs when root, else skipped)
  kills    SIGKILL at random points of a batch job, then resume; SIGTERM during a live run
  soak     4 sources of a looped clip paced at real time (surveillance settings: 2 fps, hop 1 s),
           RSS and threads over time
Prints a table per part and merges the parts run into benchmarks/results/reliability.json.
Servers listen on 127.0.0.1 only. --quick scales every part down to check the script, not the machine.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = Path(os.environ.get("STREAMCLF_SHARED_DATA", ROOT.parent / "shared" / "data"))
PY = sys.executable


def table(rows: list[dict[str, Any]], keys: list[str]) -> None:
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for r in rows:
        print("| " + " | ".join(str(r.get(k, "")) for k in keys) + " |")


def proc_status(field: str, pid: int | str = "self") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return float(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/{pid}/status")


def _pipeline(
    config: Any, specs: list[str], sinks: list[Any], on_event: Callable | None = None
) -> tuple[Any, threading.Thread]:
    from streamclf.pipeline import Pipeline
    from streamclf.sources import SourceSpec

    pipeline = Pipeline(config, sinks, on_event=on_event)
    thread = threading.Thread(target=pipeline.run, args=([SourceSpec.parse(s) for s in specs],), daemon=True)
    thread.start()
    return pipeline, thread


# ------------------------------------------------------------------ media


def part_media(quick: bool, tmp: Path) -> dict[str, Any]:
    from collections import Counter

    from tests.reliability.media import decodable, generate, label_outcome, run_outcome

    inputs = generate(DATA, tmp / "broken", per_seed=3 if quick else 11)
    files = [b.path for b in inputs]
    seconds = decodable(files, tmp, ROOT, timeout=900)
    outcomes = {"label": label_outcome(files, tmp / "label", ROOT, timeout=1800)}
    run_records: dict[str, int] = {}
    run_errors: dict[str, int] = {}
    crashed, hangs = False, 0
    for i in range(0, len(files), 60):  # 60 sources (decoder threads) per process
        o = run_outcome(files[i : i + 60], tmp / f"run{i}.jsonl", ROOT, timeout=900)
        run_records.update(o.records)
        run_errors.update(o.error_lines)
        crashed |= o.crashed
        hangs += o.returncode is None
    rows = []
    for verb, records, errors, crash, hang in (
        (
            "label",
            outcomes["label"].records,
            outcomes["label"].error_lines,
            outcomes["label"].crashed,
            int(outcomes["label"].returncode is None),
        ),
        ("run", run_records, run_errors, crashed, hangs),
    ):
        names = [f.name for f in files]
        recovered = [n for n in names if records.get(n)]
        unusable = [n for n in names if not records.get(n)]
        rows.append(
            {
                "verb": verb,
                "inputs": len(names),
                "crashes": int(crash),
                "hangs": hang,
                "with_records": len(recovered),
                "partially_recovered": sum(1 for b in inputs if records.get(b.path.name) and b.kind != "odd_audio"),
                "unusable": len(unusable),
                "unusable_with_one_error_line": sum(errors.get(n, 0) == 1 for n in unusable),
                "missed_good_parts": sum(1 for n in unusable if seconds[n] >= 0.5),
            }
        )
    print(f"\nbroken media: {len(inputs)} inputs, {dict(Counter(b.kind for b in inputs))}")
    table(rows, list(rows[0]))
    return {"kinds": dict(Counter(b.kind for b in inputs)), "rows": rows}


# ------------------------------------------------------------------ fuzz


def part_fuzz(quick: bool, seconds: int, tmp: Path) -> dict[str, Any]:
    import re

    seeds = {
        "config": sorted((ROOT / "configs").glob("*.yaml")),
        "demux": [
            DATA / "media/grid/bbaf2n.mpg",
            DATA / "media/flipping_a_pancake.mkv",
            DATA / "media/bbb_360p_60s.mp4",
            DATA / "sounds/scratch/Animal/Dog1.wav",
        ],
    }
    seconds = 5 if quick else seconds
    rows = []
    for target, files in seeds.items():
        corpus = tmp / f"corpus-{target}"
        corpus.mkdir()
        for f in files:
            (corpus / f.name).write_bytes(f.read_bytes()[:8192])
        done = subprocess.run(
            [
                PY,
                "-m",
                "tests.reliability.fuzz",
                target,
                f"-max_total_time={seconds}",
                "-timeout=20",
                "-max_len=8192",
                str(corpus),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=seconds + 300,
        )
        runs = re.search(r"Done (\d+) runs", done.stderr)
        cov = re.findall(r"cov: (\d+)", done.stderr)
        rows.append(
            {
                "target": target,
                "seconds": seconds,
                "runs": int(runs.group(1)) if runs else None,
                "coverage_edges": int(cov[-1]) if cov else None,
                "corpus": len(list(corpus.iterdir())),
                "crashes_or_hangs": int(done.returncode != 0),
            }
        )
        if done.returncode:
            print(done.stderr[-3000:])
    print("\nfuzzing (Python code coverage-instrumented; FFmpeg exercised, not instrumented)")
    table(rows, list(rows[0]))
    return {"rows": rows}


# ------------------------------------------------------------------ network


def part_network(quick: bool, tmp: Path) -> dict[str, Any]:
    from streamclf.config import load_config
    from tests.servers import RtspServer, black_hole_server, free_port, garbage_server
    from tests.test_network import Watch

    restarts = 2 if quick else 5
    live = {"window.fps": 2.0, "window.hop": 1.0, "sources.stall_timeout": 3.0, "sources.open_timeout": 3.0}
    # the backoff is the default one: the recoveries are what a user gets
    other = DATA / "media/flipping_a_pancake.mkv"
    events = Watch()
    lives = lambda rs: [r for r in rs if r.get("source") == "cam" and r.get("state") == "live"]  # noqa: E731
    recover: list[float] = []
    with RtspServer(DATA / "media/bbb_360p_60s.mp4", loop=True) as server:
        config = load_config(**live, **{"sources.realtime": True, "sources.status_interval": 1.0})
        pipeline, thread = _pipeline(config, [f"cam={server.url}", *(f"file{i}={other}" for i in range(1))], [], events)
        events.until(lambda rs: len(lives(rs)) >= 1, 60)
        for _ in range(restarts):
            time.sleep(4.0)
            server.kill()
            events.until(
                lambda rs: any(
                    r.get("state") == "reconnecting" and r.get("source") == "cam" and r["_at"] > time.monotonic() - 30
                    for r in rs
                ),
                30,
            )
            time.sleep(1.0)
            n = len(lives(events.records))
            server.restart()
            back = time.monotonic()
            if events.until(lambda rs, n=n: len(lives(rs)) > n, 30):
                recover.append(lives(events.records)[n]["_at"] - back)
        time.sleep(3.0)
        alive = thread.is_alive()
        pipeline.stop()
        thread.join(60)
    cam, file0 = pipeline.states["cam"], pipeline.states["file0"]
    file_windows = [r for r in events.records if r.get("source") == "file0" and "type" not in r]
    rows = [
        {
            "fault": f"RTSP server killed and restarted x{restarts}",
            "reconnects": cam.stats.get("reconnects"),
            "recovered": len(recover),
            "recover_p50_s": round(float(np.median(recover)), 2) if recover else None,
            "recover_max_s": round(max(recover), 2) if recover else None,
            "process_alive": alive,
            "other_source_windows": len(file_windows),
            "other_source_dropped": sum(file0.dropped.values()),
            "other_source_errors": len(file0.errors),
        }
    ]
    give_up = load_config(
        **{
            **live,
            "sources.max_reconnects": 2,
            "sources.backoff_initial": 0.2,
            "sources.stall_timeout": 2.0,
            "sources.open_timeout": 2.0,
        }
    )
    unresolvable = "a" * 64 + ".example"  # a label over 63 characters: the resolver fails it without a query
    with black_hole_server() as silent, garbage_server() as garbage:
        for fault, url in (
            ("silent server", f"rtsp://127.0.0.1:{silent}/x"),
            ("garbage server", f"http://127.0.0.1:{garbage}/live.ts"),
            ("DNS failure", f"rtsp://{unresolvable}:554/x"),
            ("connection refused", f"rtsp://127.0.0.1:{free_port()}/x"),
        ):
            t0 = time.monotonic()
            pipeline, thread = _pipeline(give_up, [f"bad={url}"], [])
            thread.join(120)
            st = pipeline.states["bad"]
            rows.append(
                {
                    "fault": fault,
                    "reconnects": st.stats.get("reconnects"),
                    "process_alive": True,
                    "gave_up_s": round(time.monotonic() - t0, 1),
                    "one_line_error": len(st.errors) >= 1 and "\n" not in st.errors[-1],
                    "error": st.errors[-1][-90:] if st.errors else None,
                }
            )
    print("\nnetwork faults")
    table(
        rows,
        [
            "fault",
            "reconnects",
            "recovered",
            "recover_p50_s",
            "recover_max_s",
            "process_alive",
            "other_source_windows",
            "other_source_dropped",
            "gave_up_s",
            "one_line_error",
            "error",
        ],
    )
    return {"rows": rows, "recover_s": [round(r, 2) for r in recover]}


# ------------------------------------------------------------------ sinks


def _clip(tmp: Path, seconds: float) -> Path:
    """A grey video with a real dog bark every few seconds (alerts, labels and status all flow)."""
    out = tmp / "barks.mp4"
    bark = DATA / "sounds/scratch/Animal/Dog1.wav"
    subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            f"color=c=gray:s=320x240:r=10:d={seconds}",
            "-stream_loop",
            "-1",
            "-i",
            str(bark),
            "-filter_complex",
            "[1:a]aresample=16000,apad=pad_dur=2[a]",
            "-map",
            "0:v",
            "-map",
            "[a]",
            "-t",
            str(seconds),
            "-c:v",
            "libx264",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            str(out),
        ],
        check=True,
    )
    return out


def _delivery(produced: list[dict[str, Any]], keys: list[str]) -> dict[str, Any]:
    ids = [r["id"] for r in produced]
    first = list(dict.fromkeys(keys))
    return {
        "produced": len(ids),
        "delivered": len(set(first) & set(ids)),
        "lost": len(set(ids) - set(first)),
        "duplicates": len(keys) - len(first),
        "in_order": [k for k in first if k in set(ids)] == ids,
    }


def part_sinks(quick: bool, tmp: Path) -> dict[str, Any]:
    from streamclf.config import load_config
    from streamclf.pipeline import open_sinks
    from tests.reliability.test_sink_faults import SlowReceiver
    from tests.test_sinks import Broker, Subscriber, free_port, serve, stop

    seconds = 12 if quick else 40
    clip = _clip(tmp, seconds)
    base = {"sources.realtime": True, "window.hop": 1.0}
    rows = []

    # webhook: 500s, then down, then slow (each a third of the run), then fine
    receiver, port = SlowReceiver(slow=0, delay=1.5), free_port()
    receiver.answers = [500] * 5
    server = serve(receiver, port)
    config = load_config(
        **base,
        **{
            "sinks.jsonl": str(tmp / "wh.jsonl"),
            "sinks.webhook.url": f"http://127.0.0.1:{port}/hook",
            "sinks.webhook.spool": str(tmp / "spool.db"),
            "sinks.webhook.timeout": 1.0,
            "sinks.webhook.backoff_max": 1.0,
            "sinks.webhook.drain_timeout": 60,
        },
    )
    pipeline, thread = _pipeline(config, [str(clip)], open_sinks(config))
    time.sleep(seconds / 3)
    stop(server)
    time.sleep(seconds / 3)
    with receiver.lock:
        receiver.slow = len(receiver.requests) + 5  # the next 5 requests take longer than the sink waits
    server = serve(receiver, port)
    thread.join(seconds + 120)
    stop(server)
    produced = [json.loads(line) for line in (tmp / "wh.jsonl").read_text().splitlines()]
    rows.append(
        {
            "sink": "webhook",
            "fault": "500s, down, slow",
            **_delivery(produced, [h["Idempotency-Key"] for h, _ in receiver.accepted()]),
        }
    )

    # MQTT: the broker restarted mid-run
    exe = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")
    if exe:
        (tmp / "mqtt").mkdir()
        broker = Broker(exe, tmp / "mqtt", persistent=True)
        broker.start()
        sub = Subscriber(broker.port, "bench/#", client_id="bench-subscriber")
        config = load_config(
            **base,
            **{
                "sinks.jsonl": str(tmp / "mq.jsonl"),
                "sinks.mqtt.host": "127.0.0.1",
                "sinks.mqtt.port": broker.port,
                "sinks.mqtt.prefix": "bench",
            },
        )
        pipeline, thread = _pipeline(config, [str(clip)], open_sinks(config))
        time.sleep(seconds / 3)
        broker.stop()
        time.sleep(3.0)
        broker.start()
        thread.join(seconds + 120)
        time.sleep(2.0)
        sub.close()
        broker.stop()
        with sub.lock:
            keys = [json.loads(p)["id"] for t, p, _ in sub.messages if not t.endswith("availability")]
        produced = [
            r
            for line in (tmp / "mq.jsonl").read_text().splitlines()
            if (r := json.loads(line)).get("type") in (None, "alert", "status")
        ]  # what MQTT carries
        rows.append({"sink": "mqtt", "fault": "broker restarted", **_delivery(produced, keys)})

    # JSON lines on a full disk (a real tmpfs), space freed a third into the run
    disk = tmp / "disk"
    disk.mkdir()
    if (
        os.geteuid() == 0
        and subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(disk)], capture_output=True
        ).returncode
        == 0
    ):
        try:
            fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT)
            try:
                while os.write(fd, b"\0" * 4096):
                    pass
            except OSError:
                pass
            os.close(fd)
            config = load_config(**base, **{"sinks.jsonl": str(tmp / "ref.jsonl")})
            pipeline, thread = _pipeline(config, [str(clip)], [*open_sinks(config, disk / "full.jsonl")])
            time.sleep(seconds / 3)
            (disk / "filler").unlink()
            thread.join(seconds + 120)
            produced = [json.loads(line) for line in (tmp / "ref.jsonl").read_text().splitlines()]
            got = [json.loads(line)["id"] for line in (disk / "full.jsonl").read_text().splitlines()]
            rows.append({"sink": "jsonl", "fault": "disk full for a third of the run", **_delivery(produced, got)})
        finally:
            subprocess.run(["umount", "-l", str(disk)], check=False)
    else:
        print("sinks: cannot mount a tmpfs (not root): the disk-full case is covered by the simulated test only")
    print("\nsink faults (delivered = distinct records received; duplicates carry the same idempotency key)")
    table(rows, list(rows[0]))
    return {"rows": rows}


# ------------------------------------------------------------------ kills


def _outputs(out: Path) -> dict[str, bytes]:
    skip = {"summary.csv", "summary.json", "manifest.json"}
    return {
        str(p.relative_to(out)): p.read_bytes()
        for p in sorted(out.rglob("*"))
        if p.is_file() and p.name not in skip and ".partial" not in p.parts
    }


def part_kills(quick: bool, tmp: Path) -> dict[str, Any]:
    from tests.reliability.test_batch_faults import alive, decode_children

    files = sorted((DATA / "media/grid").glob("*.mpg"))[: 4 if quick else 10] + [DATA / "media/flipping_a_pancake.mkv"]
    label = [PY, "-m", "streamclf", "label", *map(str, files), "--no-progress", "--out"]
    t0 = time.monotonic()
    subprocess.run([*label, str(tmp / "reference")], cwd=ROOT, check=True, capture_output=True)
    clean_s = time.monotonic() - t0
    reference = _outputs(tmp / "reference")
    rng = random.Random(0)
    rows = []
    for k in range(2 if quick else 6):
        out = tmp / f"killed{k}"
        # a random point inside the batch: after a random number of files are done, a moment later
        target, t0 = rng.randrange(0, len(files)), time.monotonic()
        log = tmp / f"killed{k}.stderr"
        with log.open("w") as err:
            proc = subprocess.Popen([*label, str(out)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err)
        while proc.poll() is None and len(list(out.rglob("*.segments.json"))) < target:
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.5))
        at = time.monotonic() - t0
        kids = decode_children(proc.pid) if proc.poll() is None else []
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        printed = log.stat().st_size
        gone = time.monotonic() + 5.0  # issue 20: the decode processes end with their parent
        while any(alive(kid) for kid in kids) and time.monotonic() < gone:
            time.sleep(0.1)
        left = sum(alive(kid) for kid in kids)
        time.sleep(1.0)
        printed_after = log.stat().st_size - printed
        done_before = {p.name for p in out.rglob("*.segments.json")}
        again = subprocess.run([*label, str(out)], cwd=ROOT, capture_output=True, text=True)
        with (out / "summary.csv").open() as f:
            summary = list(csv.DictReader(f))
        labeled_again = {Path(r["output"]).name + ".segments.json" for r in summary if r["resumed"] == "False"}
        got = _outputs(out)
        lost = sum(
            len(reference[n].splitlines()) - len(got.get(n, b"").splitlines())
            for n in reference
            if n.endswith(".jsonl")
        )
        rows.append(
            {
                "kill": "SIGKILL label",
                "at_s": round(at, 1),
                "files": len(files),
                "done_before_kill": len(done_before),
                "labeled_on_resume": len(labeled_again),
                "labeled_twice": len(done_before & labeled_again),
                "exactly_once": len(done_before) + len(labeled_again) == len(files) and not done_before & labeled_again,
                "identical_to_clean_run": got == reference,
                "exit_code": again.returncode,
                "decoders_at_kill": len(kids),
                "decoders_left_5s": left,
                "printed_after_kill": printed_after,
                "partial_outputs_left": sum(1 for p in (out / ".partial").rglob("*") if p.is_file())
                if (out / ".partial").exists()
                else 0,
                "records_lost": lost,
            }
        )
    # SIGTERM during a live run: drained and flushed, whole lines, nothing the pipeline made is lost
    clip = DATA / "media/bbb_360p_60s.mp4"
    for k in range(1 if quick else 3):
        out = tmp / f"term{k}.jsonl"
        proc = subprocess.Popen(
            [PY, "-m", "streamclf", "run", str(clip), "--realtime", "--no-dashboard", "--out", str(out)],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        at = rng.uniform(8.0, 20.0)
        time.sleep(at)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
        text = out.read_text() if out.exists() else ""
        records = [json.loads(line) for line in text.splitlines()]
        windows = [r for r in records if "type" not in r]
        timings = [r for r in records if r.get("type") == "timings"]
        starts = [w["t_start"] for w in windows]
        gaps = round((starts[-1] - starts[0]) / 0.5) + 1 - len(starts) if starts else None  # default hop 0.5 s
        rows.append(
            {
                "kill": "SIGTERM run",
                "at_s": round(at, 1),
                "exit_code": proc.returncode,
                "whole_lines": text.endswith("\n"),
                "windows_written": len(windows),
                "drained": bool(timings) and len(records) > 1 and records[-2].get("state") == "ended",
                "records_lost": gaps,
            }
        )
    print(f"\nkills (clean label run of {len(files)} files: {clean_s:.1f}s)")
    table(
        rows,
        [
            "kill",
            "at_s",
            "files",
            "done_before_kill",
            "labeled_on_resume",
            "labeled_twice",
            "exactly_once",
            "identical_to_clean_run",
            "decoders_at_kill",
            "decoders_left_5s",
            "printed_after_kill",
            "partial_outputs_left",
            "exit_code",
            "whole_lines",
            "windows_written",
            "drained",
            "records_lost",
        ],
    )
    return {"clean_label_s": round(clean_s, 1), "rows": rows}


# ------------------------------------------------------------------ soak


def part_soak(minutes: float, tmp: Path) -> dict[str, Any]:
    from streamclf.config import load_config
    from streamclf.pipeline import open_sinks

    looped = tmp / "looped.mp4"
    subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-y",
            "-stream_loop",
            str(int(minutes) + 2),
            "-i",
            str(DATA / "media/bbb_360p_60s.mp4"),
            "-c",
            "copy",
            str(looped),
        ],
        check=True,
    )
    config = load_config(**{"sources.realtime": True, "window.fps": 2.0, "window.hop": 1.0})
    pipeline, thread = _pipeline(config, [f"cam{i}={looped}" for i in range(4)], open_sinks(config, tmp / "soak.jsonl"))
    samples = []
    t0 = time.monotonic()
    every = max(1.0, minutes * 60 / 180)
    while time.monotonic() - t0 < minutes * 60 and thread.is_alive():
        time.sleep(every)
        samples.append(
            (
                round(time.monotonic() - t0, 1),
                round(proc_status("VmRSS") / 1024, 1),
                int(proc_status("Threads")),
                sum(st.windows for st in pipeline.states.values()),
            )
        )
    pipeline.stop()
    thread.join(60)
    rss = np.array([s[1] for s in samples])
    threads = np.array([s[2] for s in samples])
    tenth = max(1, len(samples) // 10)
    early, late = float(rss[tenth : 2 * tenth].mean()), float(rss[-tenth:].mean())
    states = pipeline.states.values()
    windows = sum(st.windows for st in states)
    row = {
        "minutes": round((time.monotonic() - t0) / 60, 1),
        "sources": 4,
        "windows": windows,
        "expected_windows": int(4 * minutes * 60 / config.window.hop),
        "dropped": sum(sum(st.dropped.values()) for st in states),
        "rss_peak_mb": round(proc_status("VmHWM") / 1024, 1),
        "rss_early_mb": round(early, 1),
        "rss_late_mb": round(late, 1),
        "rss_growth_percent": round(100 * (late - early) / early, 2),
        # median per tenth: short-lived helper threads come and go; a leak raises the baseline
        "threads_early": int(np.median(threads[tenth : 2 * tenth])),
        "threads_late": int(np.median(threads[-tenth:])),
        "thread_growth_percent": round(
            100
            * (np.median(threads[-tenth:]) - np.median(threads[tenth : 2 * tenth]))
            / np.median(threads[tenth : 2 * tenth]),
            2,
        ),
        "threads_max": int(threads.max()),
        "errors": sum(len(st.errors) for st in states),
    }
    print(f"\nsoak: 4 real-time sources, {row['minutes']} min")
    table([row], list(row))
    return {"row": row, "samples": samples}


def main() -> None:
    parts = ["media", "fuzz", "network", "sinks", "kills", "soak"]
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", nargs="+", choices=parts, default=parts)
    ap.add_argument("--soak-minutes", type=float, default=30.0)
    ap.add_argument("--fuzz-seconds", type=int, default=120)
    ap.add_argument("--quick", action="store_true", help="every part scaled down: checks the script")
    ap.add_argument(
        "--out",
        default=str(ROOT / "benchmarks" / "results" / "reliability.json"),
        help="results (--quick writes to the temp folder instead)",
    )
    args = ap.parse_args()
    if not (DATA / "media/bbb_360p_60s.mp4").exists():
        raise SystemExit(f"reliability: shared media under {DATA} is absent (set STREAMCLF_SHARED_DATA)")
    out = Path(tempfile.gettempdir()) / "reliability_quick.json" if args.quick else Path(args.out)
    machine = {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine()}
    for part in args.parts:
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.monotonic()
            if part == "media":
                result = part_media(args.quick, Path(tmp))
            elif part == "fuzz":
                result = part_fuzz(args.quick, args.fuzz_seconds, Path(tmp))
            elif part == "network":
                result = part_network(args.quick, Path(tmp))
            elif part == "sinks":
                result = part_sinks(args.quick, Path(tmp))
            elif part == "kills":
                result = part_kills(args.quick, Path(tmp))
            else:
                result = part_soak(0.5 if args.quick else args.soak_minutes, Path(tmp))
        # merged after every part (re-read: another run may have written other parts meanwhile)
        doc = json.loads(out.read_text()) if out.exists() and not args.quick else {}
        doc.update(machine=machine, quick=args.quick)
        doc[part] = {**result, "wall_s": round(time.monotonic() - t0, 1), "when": time.strftime("%Y-%m-%d %H:%M")}
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
