"""The ``obscore`` command."""

from __future__ import annotations

import argparse
import csv
import logging
import math
import sys
import time
from collections import deque
from datetime import datetime, timezone
from pathlib import Path

from tqdm import tqdm

logger = logging.getLogger("obscore.cli")


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _overlap(a0: int, a1: int, b0: int, b1: int) -> bool:
    return a0 <= b1 and b0 <= a1


# NOTE: sim.incident.default_incidents fits 3 incidents of up to 60 min, 60 min
# apart and 10 min clear of the end, after a warm-up of a quarter of the span:
# (3 * 60 + 2 * 60 + 10) / 0.75 = 413 min, so from 7 h every seed fits
_DEMO_MIN_HOURS = 7.0


def cmd_demo(args: argparse.Namespace) -> int:
    from obscore.catalogue import from_platform
    from obscore.engine import Engine
    from obscore.report import write_demo_report, write_html_report
    from obscore.sim import simulate

    if not args.hours >= _DEMO_MIN_HOURS:
        print(f"obscore demo: --hours must be at least {_DEMO_MIN_HOURS:g}, got {args.hours:g}: the demo "
              "injects 3 incidents of up to 60 min, 60 min apart, after a warm-up of a quarter of the span",
              file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    out_dir = Path(args.out)
    if not _out_dir_ready(out_dir, "demo"):
        return 2
    steps = tqdm(total=5, desc="demo", unit="step", file=sys.stderr, disable=args.quiet)
    steps.set_postfix_str("simulating the platform")
    sim = simulate(seed=args.seed, hours=args.hours)
    steps.update()
    steps.set_postfix_str("ingesting")
    engine = Engine(catalogue=from_platform(sim.platform))
    engine.ingest(sim.table, sim.index)
    _record_demo_changes(engine, sim, args.seed)
    steps.update()
    steps.set_postfix_str("detecting")
    result = engine.run_pipeline(sim.start_ms, sim.end_ms, sim.step_ms)
    steps.update()
    steps.set_postfix_str("diagnosing")
    matches = []
    for truth in sim.incidents:
        hits = [i for i in result.incidents if _overlap(i.start_ms, i.end_ms, truth.start_ms, truth.end_ms)]
        inc = max(hits, key=lambda i: len(i.anomalies)) if hits else None
        diag = engine.diagnose(inc) if inc is not None else None
        matches.append((truth, inc, diag))
    steps.update()
    steps.set_postfix_str("writing the report")
    alerts = engine.alerts()
    report = write_demo_report(
        out_dir, sim, result, matches, alerts, engine.alert_book.folded, engine.catalogue.dependencies()
    )
    html = write_html_report(engine, out_dir, sim.start_ms, sim.end_ms)
    steps.update()
    steps.close()

    print(f"obscore demo: {len(sim.platform.services)} services x {len(sim.platform.regions)} regions, "
          f"{len(sim.index)} series, {sim.table.num_rows:,} samples over {args.hours:g} h")
    print(f"{len(result.anomalies)} anomalies -> {len(result.incidents)} incidents -> "
          f"{len(alerts)} alerts ({engine.alert_book.folded} repeats folded within 15m)")
    print()
    print("Alerts (by start time; severity in [0, 1], xN = repeats folded):")
    for al in sorted(alerts, key=lambda a: a.start_ms):
        print(f"  {_when(al.start_ms)}  sev {al.severity:.2f}  x{al.count:<3d} incident {al.incident_id:<3}  {al.summary}")
        ann = al.annotations
        print(f"      owner {ann.get('owner', 'unknown')}, region {ann.get('region', 'unknown')}, "
              f"changes: {ann.get('changes', 'none')}")
    print()
    detected = first = 0
    for n, (truth, inc, diag) in enumerate(matches, 1):
        print(f"Incident {n}: {truth.kind}, true cause {truth.service} / {truth.metric}, "
              f"{_when(truth.start_ms)} - {_when(truth.end_ms)}")
        if inc is None:
            print("  not detected")
            continue
        detected += 1
        print(f"  detected as incident {inc.id} ({len(inc.anomalies)} anomalies, first {inc.first.signal} at {_when(inc.first.start_ms)})")
        for r, c in enumerate(diag.candidates[:3], 1):
            if c.service == truth.service and c.metric == truth.metric:
                mark = "  <- true cause"
            elif c.service == truth.service:
                mark = "  (true cause service)"
            else:
                mark = ""
            print(f"  {r}. {c.service} / {c.metric}  confidence {c.confidence:.2f}{mark}")
        if diag.top is not None and diag.top.service == truth.service:
            first += 1
    print()
    _print_dedup_comparison(engine, result, matches)
    print(f"Detected {detected} of {len(matches)} injected incidents; true cause service ranked first for {first} of {len(matches)}.")
    print(f"Report: {report}, {html}  ({time.perf_counter() - t0:.1f} s)")
    return 0


def _print_dedup_comparison(engine, result, matches) -> None:
    """Notifications per injected incident with exact-only and with similarity dedup."""
    from obscore.alert import AlertBook
    from obscore.alert.lifecycle import replay_notifications, routing_from_config
    from obscore.pipeline import raise_alerts

    exact = AlertBook(engine.config.dedup_window_ms, None)
    raise_alerts(exact, result.incidents, engine.config.metrics)
    similar = engine.alert_book
    # both alert sets through the configured routing on their own clock
    routing = routing_from_config(engine.config.raw)
    until = max((a.end_ms for a in exact.alerts), default=0) + 86_400_000
    notes = [replay_notifications(b.alerts, routing, until) for b in (exact, similar)]
    for n, (truth, inc, _) in enumerate(matches, 1):
        if inc is None:
            continue
        e, s = (
            sum(1 for note in ns
                if any(str(inc.id) in a.annotations.get("incident_ids", "").split(",")
                       for a in note.alerts))
            for ns in notes
        )
        print(f"Incident {n} ({truth.kind}): {e} notifications with exact dedup, {s} with similarity dedup")
    print(f"All notifications: {len(notes[0])} with exact dedup, {len(notes[1])} with similarity dedup; "
          f"alerts {len(exact.alerts)} -> {len(similar.alerts)} "
          f"(threshold {engine.config.dedup_similarity:g}, window {engine.config.dedup_window_ms // 60_000}m)")
    print()


def _record_demo_changes(engine, sim, seed: int) -> None:
    """Deploys as a platform would log them: one before each bad deploy, a few harmless."""
    import numpy as np

    rng = np.random.default_rng(seed + 1)
    for truth in sim.incidents:
        if truth.kind == "bad_deploy":
            engine.record_event(truth.service, "deploy", f"release of {truth.service}",
                                ts_ms=truth.start_ms - 60_000, region=truth.region)
    for _ in range(4):
        svc = str(rng.choice(sim.platform.services))
        ts = int(rng.integers(sim.start_ms, sim.end_ms))
        engine.record_event(svc, "deploy", f"routine release of {svc}", ts_ms=ts)


def cmd_detect(args: argparse.Namespace) -> int:
    from obscore.config import load_config
    from obscore.detect.base import load_plugins
    from obscore.detect.stream import default_detector, detect_stream
    from obscore.errors import ObscoreError
    from obscore.ingest.files import walk_csv

    try:
        config = load_config(args.config)
        load_plugins([*config.detector_plugins, *args.plugin])
        name = args.detector or config.detector
        default_detector(name)
    except KeyError as exc:
        print(f"obscore detect: {exc.args[0]}", file=sys.stderr)
        return 2
    except ObscoreError as exc:
        print(f"obscore detect: {exc}", file=sys.stderr)
        return 2
    out_dir = Path(args.out)
    files = walk_csv(args.paths)
    if not files:
        print("obscore detect: no CSV files found", file=sys.stderr)
        return 2
    missing = [path for path, _ in files if not path.is_file()]
    for path in missing:
        print(f"{path}: no such file", file=sys.stderr)
    files = [(path, rel) for path, rel in files if path.is_file()]
    inputs = {path.resolve() for path, _ in files}
    clash = next((out_dir / rel for _, rel in files if (out_dir / rel).resolve() in inputs), None)
    if clash is not None:
        print(f"obscore detect: --out {args.out} would overwrite the input {clash}; "
              "give another folder", file=sys.stderr)
        return 2
    if not _out_dir_ready(out_dir, "detect"):
        return 2
    status = 2 if missing else 0
    total_alerts = bad = scored = 0
    for path, rel in tqdm(files, desc="detect", unit="file", file=sys.stderr, disable=args.quiet):
        try:
            ts, values, n_bad, n_rows = _detect_read(path)
        except (ObscoreError, OSError) as exc:
            message = str(exc)
            print(message if message.startswith(str(path)) else f"{path}: {message}", file=sys.stderr)
            status = 2
            continue
        bad += n_bad
        if not len(ts):
            print(f"{path}: no samples to score{f': {n_bad} bad rows of {n_rows}' if n_bad else ''}",
                  file=sys.stderr)
            status = 2
            continue
        res = detect_stream(ts, values, default_detector(name), config.detect_threshold)
        stamps = _timestamps(ts)
        back = (ts[1:] < ts[:-1]).nonzero()[0]
        if len(back):
            print(f"{path}: {len(back)} of {len(ts)} rows go back in time (the first: {stamps[back[0] + 1]} "
                  f"after {stamps[back[0]]}); scored in file order, as a stream arrives",
                  file=sys.stderr)
        target = out_dir / rel
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with target.open("w", newline="", encoding="utf-8") as fh:
                w = csv.writer(fh, lineterminator="\n")
                w.writerow(["timestamp", "value", "anomaly_score", "alert"])
                for raw, v, s, a in zip(stamps, values, res.scores, res.alerts):
                    w.writerow([raw, repr(float(v)) if v == v else "nan", f"{s:.6f}", int(a)])
        except OSError as exc:
            print(f"obscore detect: cannot write {target}: {exc.strerror}", file=sys.stderr)
            return 2
        scored += 1
        for i in res.alerts.nonzero()[0]:
            print(f"ALERT {path}: {stamps[i]} value={values[i]:g} score={res.scores[i]:.3f}")
            total_alerts += 1
    print(f"{scored} files, {total_alerts} alerts, {bad} bad rows; results in {out_dir}")
    return status


def _detect_read(path: Path):
    """The ``(ts, values, bad rows, rows)`` of a timestamp,value CSV, read as ``ingest`` reads it.

    The bad rows are printed (the first :data:`_PROBLEMS_SHOWN`, then a count).
    """
    import numpy as np

    from obscore.errors import InvalidSampleError
    from obscore.ingest.files import SampleFile

    reader = SampleFile(path, format="csv")
    tables = list(reader.batches())
    if reader.layout != "narrow":
        raise InvalidSampleError(f"{path}: a {reader.layout} table; expected 'timestamp,value' columns")
    for problem in reader.problems[:_PROBLEMS_SHOWN]:
        print(problem, file=sys.stderr)
    if len(reader.problems) > _PROBLEMS_SHOWN:
        print(f"{path}: {len(reader.problems) - _PROBLEMS_SHOWN} more bad rows", file=sys.stderr)
    ts = np.concatenate([t.column("ts").to_numpy() for t in tables]) if tables else np.empty(0, np.int64)
    values = np.concatenate([t.column("value").to_numpy() for t in tables]) if tables else np.empty(0)
    return ts, values, len(reader.problems), reader.n_rows


def _timestamps(ts) -> list[str]:
    """``2014-04-01 00:05:00`` (UTC) for each ts; with milliseconds when any has some."""
    import numpy as np

    unit = "ms" if (ts % 1000).any() else "s"
    return [t.replace("T", " ") for t in np.datetime_as_string(ts.astype("datetime64[ms]"), unit=unit)]


def cmd_ingest(args: argparse.Namespace) -> int:
    import os

    from obscore.config import load_config
    from obscore.engine import Engine
    from obscore.errors import ObscoreError

    from obscore.ingest.files import WALKED_SUFFIXES, walk_sample_files

    config = load_config(args.config)  # a dry run checks it too, and the metrics against it
    paths = walk_sample_files(args.paths)
    sizes = {p: (0 if p == "-" else os.path.getsize(p)) for p in paths if p == "-" or os.path.isfile(p)}
    missing = [p for p in paths if p not in sizes]
    for path in missing:
        print(f"{path}: no such file", file=sys.stderr)
    empty = [p for p in args.paths if os.path.isdir(p) and not walk_sample_files([p])]
    for folder in empty:
        print(f"{folder}: no sample files in this folder ({', '.join(sorted(WALKED_SUFFIXES))})",
              file=sys.stderr)
        missing.append(folder)
    if not sizes:
        return 2  # nothing to read: no data directory is made either
    total = sum(sizes.values())
    # a bar by bytes, for inputs large enough to wait for
    bar = tqdm(total=total, desc="ingest", unit="B", unit_scale=True, unit_divisor=1024,
               file=sys.stderr, disable=args.quiet or total < _PROGRESS_BYTES)
    status = 2 if missing else 0
    engine = None if args.dry_run else Engine(args.data, config=config)
    try:
        for path, size in sizes.items():
            done = bar.n
            try:
                status = max(status, _ingest_file(args, engine, config, path, bar.update))
            except (ObscoreError, OSError) as exc:
                message = str(exc)
                print(message if message.startswith(path) else f"{path}: {message}", file=sys.stderr)
                status = 2
            bar.update(done + size - bar.n)
    finally:
        bar.close()
        if engine is not None:
            engine.close()
    return status


_PROGRESS_BYTES = 1 << 20  # inputs from 1 MiB on get a progress bar
_PROBLEMS_SHOWN = 20


def _ingest_file(args: argparse.Namespace, engine, config, path: str, on_read) -> int:
    """Read (and, with an engine, store) one file; 0 when all went well, else 2.

    A file that stores nothing while it drops rows (bad rows, undeclared
    metrics, samples too old, ...) fails; so does a dry run of a file with
    bad rows.  A dry run names the undeclared metrics a real run would drop.
    """
    import warnings

    from obscore.errors import DroppedDataWarning
    from obscore.ingest.files import SampleFile
    from obscore.model import MetricKind, MetricSpec

    data = sys.stdin.buffer.read() if path == "-" else None
    now = int(time.time() * 1000)
    reader = SampleFile(path, data=data, format=args.format, metric=args.metric,
                        strict=args.strict, on_read=on_read, now_ms=now)
    stored, dropped = 0, {}
    batches = reader.batches()
    if engine is not None and args.strict:
        batches = iter(list(batches))  # a bad row refuses the whole file
    seen = []  # a dry run's (series, ts, value bits), to count exact repeats
    for batch in batches:
        if args.declare:
            specs = {s.name: s for s in reader.specs}
            for name in reader.index.metric_names:
                if config.spec_of(name) is None:
                    labels = sorted({k for sid in reader.index.ids(name) for k in reader.index.labels(sid)})
                    spec = specs.get(name, MetricSpec(name, MetricKind.GAUGE, tuple(labels)))
                    config.metrics.setdefault(spec.name, spec)
        if engine is None:
            seen.append(batch.select(["series_id", "ts", "value"]))
            continue
        with warnings.catch_warnings():  # the drops are reported below, per file
            warnings.simplefilter("ignore", DroppedDataWarning)
            res = engine.ingest(batch, reader.index)
        stored += res.stored
        for reason, n in res.dropped.items():
            dropped[reason] = dropped.get(reason, 0) + n
    for problem in reader.problems[:_PROBLEMS_SHOWN]:
        print(problem, file=sys.stderr)
    if len(reader.problems) > _PROBLEMS_SHOWN:
        print(f"{path}: {len(reader.problems) - _PROBLEMS_SHOWN} more bad rows", file=sys.stderr)
    unknown = [n for n in reader.index.metric_names if config.spec_of(n) is None]
    if unknown:
        print(f"{path}: undeclared metrics {unknown[:5]!r}{' and more' if len(unknown) > 5 else ''}"
              f"{' would be' if engine is None else ' were'} dropped; declare them in the "
              "config or pass --declare", file=sys.stderr)
    n_bad = len(reader.problems)
    if engine is None:
        if n_bad:
            print(f"{path}: invalid {reader.format}: {n_bad} bad rows of {reader.n_rows}", file=sys.stderr)
        if n_bad:
            return 2
        repeats = _exact_repeats(seen)
        print(f"{path}: valid {reader.format} ({reader.layout} layout), {reader.n_rows} samples "
              f"of {len(reader.index)} series"
              f"{f' ({repeats} exact repeats, which are stored once)' if repeats else ''}")
        return 0
    if n_bad:
        dropped["bad_row"] = n_bad
    n_dropped = sum(dropped.values())
    detail = ", ".join(f"{n} {reason}" for reason, n in dropped.items())
    # a repeat of a stored sample (same series, time and value) is kept once, silently
    repeats = reader.n_rows - stored - n_dropped
    print(f"{path}: {stored} samples stored, {n_dropped} dropped"
          f"{f' ({detail})' if detail else ''}"
          f"{f', {repeats} exact repeats of stored samples' if repeats > 0 else ''}")
    # rows refused and nothing new kept is a failure, not a no-op
    return 2 if n_dropped and stored == 0 else 0


def _exact_repeats(tables) -> int:
    """Rows repeating an earlier row's series, timestamp and value (bit for bit)."""
    import numpy as np
    import pyarrow as pa

    if not tables:
        return 0
    t = pa.concat_tables(tables)
    sid, ts = t["series_id"].to_numpy(), t["ts"].to_numpy()
    bits = t["value"].to_numpy().view(np.uint64)
    order = np.lexsort((bits, ts, sid))
    sid, ts, bits = sid[order], ts[order], bits[order]
    return int(((sid[1:] == sid[:-1]) & (ts[1:] == ts[:-1]) & (bits[1:] == bits[:-1])).sum())


def cmd_scrape(args: argparse.Namespace) -> int:
    import time

    from obscore.durations import parse_duration
    from obscore.engine import Engine
    from obscore.errors import ObscoreError
    from obscore.ingest.scrape import Target, targets_from_config

    try:
        interval_s = parse_duration(args.interval) / 1000
        duration_s = parse_duration(args.duration) / 1000
        engine = Engine(args.data, config=args.config)
    except ObscoreError as exc:
        print(f"obscore scrape: {exc}", file=sys.stderr)
        return 2
    try:
        if args.urls:
            targets = [Target(url, job=args.job, interval_s=interval_s) for url in args.urls]
        else:  # the [[scrape]] tables of the config, each target on its own interval
            targets = targets_from_config(engine.config.scrape_targets)
    except ObscoreError as exc:
        print(f"obscore scrape: {exc}", file=sys.stderr)
        engine.close()
        return 2
    if not targets:
        print("obscore scrape: no URL given and the config has no [[scrape]] targets", file=sys.stderr)
        engine.close()
        return 2
    scraper = engine.scrape(targets, timeout_s=min(10.0, interval_s))
    try:
        with tqdm(total=round(duration_s), desc="scrape", unit="s", file=sys.stderr, disable=args.quiet) as bar:
            end = time.monotonic() + duration_s
            while (left := end - time.monotonic()) > 0:
                time.sleep(min(1.0, left))
                bar.n = round(duration_s - max(left - 1.0, 0.0))
                bar.refresh()
    except KeyboardInterrupt:
        pass
    finally:
        scraper.stop()
    for row in scraper.target_stats():
        print(
            f"{row['job']} {row['instance']}: {row['scrapes']} scrapes, {row['failures']} failed, "
            f"last {row.get('samples', 0)} samples"
        )
    engine.close()
    return 0 if all(s.scrapes > s.failures for s in scraper.stats) else 1


def cmd_eval(args: argparse.Namespace) -> int:
    import json

    if args.cases is not None and args.cases < 1:
        print(f"obscore eval: --cases must be at least 1, got {args.cases}", file=sys.stderr)
        return 2
    if args.seed < 0:
        print(f"obscore eval: --seed must be 0 or more, got {args.seed}", file=sys.stderr)
        return 2
    if args.suite == "grouping":
        return _eval_grouping(args)
    if args.suite == "nab":
        from obscore.detect.evaluate import evaluate_nab, load_nab

        from obscore.config import load_config

        from obscore.detect.stream import default_detector

        from obscore.detect.base import load_plugins
        from obscore.errors import ConfigError

        config = load_config(args.config)
        args.detector = args.detector or config.detector
        args.threshold = config.detect_threshold if args.threshold is None else args.threshold
        try:
            load_plugins([*config.detector_plugins, *args.plugin])
            default_detector(args.detector)
            corpus = load_nab(args.path)
        except KeyError as exc:
            print(f"obscore eval: {exc.args[0]}", file=sys.stderr)
            return 2
        except ConfigError as exc:
            print(f"obscore eval: {exc}", file=sys.stderr)
            return 2
        except OSError as exc:
            print(f"obscore eval: {args.path} is not a NAB folder: {exc}", file=sys.stderr)
            return 2
        bar = tqdm(total=len(corpus.names), desc="nab", unit="file", file=sys.stderr, disable=args.quiet)
        result = evaluate_nab(corpus, args.detector, args.threshold, progress=lambda _name: bar.update())
        bar.close()
        if args.json:
            print(json.dumps(result, indent=2, allow_nan=False))
            return 0
        print(f"NAB, detector {args.detector!r}, declared threshold {args.threshold:g} "
              f"({result.get('runtime_s', float('nan')):.1f} s)")
        print(f"{'profile':<22} {'alerts@declared':>16} {'best threshold':>15} {'score':>8}")
        for profile, res in result["profiles"].items():
            best = res["best"]
            print(f"{profile:<22} {res['alerts']['score']:>16.2f} {best['threshold']:>15.3g} {best['score']:>8.2f}")
        for name, published in result.get("published", {}).items():
            line = ", ".join(f"{p} {published[p]:.2f}" for p in result["profiles"] if p in published)
            print(f"published {name}: {line}")
        return 0
    if args.suite == "smd":
        from obscore.detect.evaluate import evaluate_smd

        bar = tqdm(desc="smd", unit="machine", file=sys.stderr, disable=args.quiet)
        try:
            result = evaluate_smd(args.path, threshold=0.5 if args.threshold is None else args.threshold,
                                  progress=lambda _name: bar.update())
        except FileNotFoundError as exc:
            bar.close()
            print(f"obscore eval: {exc}", file=sys.stderr)
            return 2
        bar.close()
        print(json.dumps(result, indent=2, allow_nan=False) if args.json else _smd_table(result))
        return 0
    if args.suite == "rca":
        if args.dataset == "sim":
            from obscore.diagnose.simeval import evaluate_sim

            cases = 100 if args.cases is None else args.cases
            bar = tqdm(total=cases, desc="rca sim", unit="incident", file=sys.stderr, disable=args.quiet)
            result = evaluate_sim(cases, progress=bar.update)
            bar.close()
            if not args.json:
                result.pop("per_case")
        elif not Path(args.path).exists():
            print(f"obscore eval: {args.path}: no such file or directory", file=sys.stderr)
            return 2
        elif args.dataset == "smd":
            from obscore.diagnose.evaluate import evaluate_smd_rca

            result = evaluate_smd_rca(args.path)
            if not args.json:
                result.pop("per_segment")
        else:
            from obscore.diagnose.evaluate import evaluate_rca

            result = evaluate_rca(args.path, args.dataset).to_dict()
        print(json.dumps(result, indent=2, allow_nan=True))
        return 0
    raise AssertionError(args.suite)


def _eval_grouping(args: argparse.Namespace) -> int:
    """Pairwise precision/recall of the grouping over ``--cases`` seeded simulations
    (default 50), seeds ``--seed`` onwards."""
    import json

    from obscore.grouping_eval import evaluate_grouping

    runs = 50 if args.cases is None else args.cases
    bar = tqdm(total=runs, desc="grouping", unit="run", file=sys.stderr, disable=args.quiet)
    result = evaluate_grouping(runs, seed=args.seed, progress=bar.update)
    bar.close()
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    worst = result["worst"]
    print(
        f"grouping over {result['runs']} runs (seeds {args.seed}-{args.seed + runs - 1}): "
        f"{result['anomalies']} anomalies, {result['attributed']} attributed to "
        f"{result['injected_with_anomalies']} injected incidents\n"
        f"pairwise precision {result['precision']:.3f} (mean of runs "
        f"{result['mean_precision']:.3f}), recall {result['recall']:.3f} (mean of runs "
        f"{result['mean_recall']:.3f})\n"
        f"injected incidents split into more than 2: {result['split_over_2']} "
        f"(largest split {result['max_split']})\n"
        f"worst run: seed {worst['seed']}, precision {worst['precision']:.3f}, "
        f"recall {worst['recall']:.3f}"
    )
    return 0


def _smd_table(result: dict) -> str:
    lines = [f"{'machine':<12} {'F1':>6} {'F1 (point-adjusted)':>20}"]
    for name, m in result.get("machines", {}).items():
        lines.append(f"{name:<12} {m['point']['f1']:>6.3f} {m['adjusted']['f1']:>20.3f}")
    avg = result.get("average", {})
    if avg:
        lines.append(f"{'average':<12} {avg['point']['f1']:>6.3f} {avg['adjusted']['f1']:>20.3f}")
    return "\n".join(lines)


def _port(text: str) -> int:
    """A TCP port for argparse: an integer in 1..65535."""
    try:
        port = int(text)
    except ValueError:
        port = 0
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port; expected an integer from 1 to 65535")
    return port


def cmd_serve(args: argparse.Namespace) -> int:
    import os

    from obscore.engine import Engine
    from obscore.errors import ConfigError
    from obscore.server import check_listen, create_app, is_loopback, serve
    from obscore.server.simulate import fill_from_simulation, simulated_catalogue

    token = args.token or os.environ.get("OBSCORE_TOKEN") or None
    catalogue = simulated_catalogue() if args.simulate else None
    engine = Engine(args.data, config=args.config, catalogue=catalogue)
    if engine.config.scrape_targets:  # the [[scrape]] tables; stopped by engine.close()
        from obscore.ingest.scrape import targets_from_config

        try:
            engine.scrape(targets_from_config(engine.config.scrape_targets))
        except ConfigError as exc:
            print(f"obscore serve: {exc}", file=sys.stderr)
            engine.close()
            return 2
    app = create_app(
        engine,
        token=token,
        max_body_bytes=args.max_body_mb * 1024 * 1024,
        max_series=args.max_series,
        declare=args.declare,
        warmup=fill_from_simulation if args.simulate else None,
    )
    try:
        if token or is_loopback(args.host):  # else serve refuses, below
            check_listen(args.host, args.port)
            print(f"obscore serve: listening on http://{args.host}:{args.port}", file=sys.stderr)
        serve(app, args.host, args.port, token=token)
    except ConfigError as exc:
        print(f"obscore serve: {exc}", file=sys.stderr)
        return 2
    finally:
        engine.close()
    return 0


_YEAR_10000_MS = 253_402_300_800_000


def _parse_when(text: str | None) -> int | None:
    """Milliseconds from unix seconds or milliseconds (as ``ingest`` tells them
    apart: under 1e10 is seconds) or an ISO 8601 time (UTC when no zone is given)."""
    if text is None:
        return None
    try:
        number = float(text)
    except ValueError:
        number = None
    if number is not None:
        if not math.isfinite(number):
            raise ValueError(f"{text!r} is not a time; give unix seconds or milliseconds, or ISO 8601")
        ms = round(number * 1000) if abs(number) < 1e10 else round(number)
    else:
        try:
            when = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(
                f"{text!r} is not a time; give unix seconds or ISO 8601 such as 2026-01-01T10:00:00Z"
            ) from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        ms = round(when.timestamp() * 1000)
    if not 0 <= ms < _YEAR_10000_MS:
        raise ValueError(f"{text!r} is out of range: give a time from 1970 to the year 9999")
    return ms


def cmd_event(args: argparse.Namespace) -> int:
    """Record a change event in a data directory without loading its samples."""
    from obscore.catalogue import Catalogue
    from obscore.errors import ConfigError

    data = Path(args.data)
    try:
        ts = _parse_when(args.at)
        data.mkdir(parents=True, exist_ok=True)
        cat = Catalogue()
        cat.load_events(data / "events.json")
        event = cat.record_event(
            ts if ts is not None else time.time_ns() // 1_000_000,
            args.service, args.kind, args.description, args.region,
        )
        cat.save_events(data / "events.json")
    except (ConfigError, ValueError, OSError) as exc:
        print(f"obscore event: {exc}", file=sys.stderr)
        return 2
    print(f"{_when(event.ts)}  {event}  ({len(cat.events)} events in {data / 'events.json'})")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """Run the pipeline over a stored range and write the dashboard as static HTML."""
    from obscore.engine import Engine
    from obscore.errors import ObscoreError
    from obscore.report import write_html_report

    if not _data_dir_exists(args, "report", samples=True):
        return 2
    try:
        start, end = _parse_when(args.from_), _parse_when(args.to)
        engine = Engine(args.data, config=args.config)
    except (ObscoreError, ValueError) as exc:
        print(f"obscore report: {exc}", file=sys.stderr)
        return 2
    try:
        rng = engine.time_range()
        if rng is None:
            print(f"obscore report: no samples in {args.data}", file=sys.stderr)
            return 2
        start = rng[0] if start is None else start
        end = rng[1] if end is None else end
        if end <= start:
            print(f"obscore report: --to {_when(end)} is not after --from {_when(start)}", file=sys.stderr)
            return 2
        if not _out_dir_ready(Path(args.out), "report"):
            return 2
        result = engine.run_pipeline(start, end)
        path = write_html_report(engine, Path(args.out), start, end)
    finally:
        engine.close()
    print(f"obscore report: {_when(start)} to {_when(end)} UTC, {len(result.anomalies)} anomalies, "
          f"{len(result.incidents)} incidents, {len(engine.alerts())} alerts -> {path}")
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    """Run the pipeline as one batch over a stored range and print what it found."""
    import json

    from obscore.engine import Engine
    from obscore.errors import ObscoreError

    if not _data_dir_exists(args, "replay", samples=True):
        return 2
    try:
        start, end = _parse_when(args.from_), _parse_when(args.to)
        engine = Engine(args.data, config=args.config)
    except (ObscoreError, ValueError) as exc:
        print(f"obscore replay: {exc}", file=sys.stderr)
        return 2
    try:
        rng = engine.time_range()
        if rng is None:
            print(f"obscore replay: no samples in {args.data}", file=sys.stderr)
            return 2
        start = rng[0] if start is None else start
        end = rng[1] if end is None else end
        if end < start:
            print(f"obscore replay: --to {_when(end)} is before --from {_when(start)}", file=sys.stderr)
            return 2
        result = engine.replay(start, end)
    finally:
        engine.close()
    if args.json:
        print(json.dumps({
            "start_ms": start,
            "end_ms": end,
            "anomalies": [
                {"signal": a.signal, "start_ms": a.start_ms, "end_ms": a.end_ms, "peak_z": a.peak_z}
                for a in result.anomalies
            ],
            "incidents": [
                {"id": i.id, "start_ms": i.start_ms, "end_ms": i.end_ms, "services": sorted(i.services),
                 "anomalies": len(i.anomalies), "reasons": i.reasons}
                for i in result.incidents
            ],
            "alerts": [
                {"fingerprint": al.fingerprint, "labels": al.labels, "start_ms": al.start_ms,
                 "end_ms": al.end_ms, "severity": al.severity, "count": al.count,
                 "incident_id": al.incident_id, "summary": al.summary, "annotations": al.annotations}
                for al in result.alerts
            ],
        }, indent=2, allow_nan=True))
        return 0
    print(f"replay {_when(start)} - {_when(end)}: {len(result.anomalies)} anomalies -> "
          f"{len(result.incidents)} incidents -> {len(result.alerts)} alerts")
    for inc in result.incidents:
        print(f"  incident {inc.id:<3d} {_when(inc.start_ms)} - {_when(inc.end_ms)}  "
              f"{len(inc.anomalies):3d} anomalies  services: {', '.join(sorted(inc.services)) or '-'}")
    for al in sorted(result.alerts, key=lambda a: a.start_ms):
        print(f"  {_when(al.start_ms)}  sev {al.severity:.2f}  x{al.count:<3d} incident {al.incident_id:<3}  "
              f"{al.fingerprint}  {al.summary}")
    return 0


def cmd_ack(args: argparse.Namespace) -> int:
    """Acknowledge an alert in a data directory: its escalation stops (also in a running server)."""
    import getpass

    from obscore.alert.escalate import STATE_PART, append_ack
    from obscore.alert.state import StateDir

    state_dir = _alert_state_dir(args, "ack")
    if state_dir is None:
        return 2
    known = StateDir(state_dir).load(STATE_PART, {}).get("tracks", {}) if state_dir.is_dir() else {}
    matches = [fp for fp in known if fp.startswith(args.fingerprint)] if args.fingerprint else []
    if len(matches) != 1:
        what = "no escalated alert" if not matches else f"{len(matches)} escalated alerts"
        print(f"obscore ack: {what} in {state_dir} matches fingerprint {args.fingerprint!r}"
              f"{'; known: ' + ', '.join(sorted(known)[:10]) if known else ''}", file=sys.stderr)
        return 2
    fp = matches[0]
    by = args.by or getpass.getuser()
    append_ack(state_dir, fp, by, args.comment, time.time_ns() // 1_000_000)
    track = known[fp]
    print(f"acknowledged {fp} ({track.get('summary', '')}) by {by}; "
          f"it was at level {track.get('level')} of policy {track.get('policy')!r}, state {track.get('state')}")
    return 0


def _add_pipeline_commands(sub) -> None:
    """``event``, ``replay`` and ``ack``: the pipeline's and the alerts' commands."""
    evt = sub.add_parser("event", help="record a change event (deploy, config, scale, flag) in a data directory")
    evt.add_argument("--data", default="obscore-data", help="data directory (default obscore-data)")
    evt.add_argument("--service", required=True, help="the service that changed")
    evt.add_argument(
        "--kind", required=True,
        choices=["deploy", "config", "scale", "flag", "scaling", "feature_flag", "other"],
        help="what changed",
    )
    evt.add_argument("--region", default=None, help="the region, when the change was in one")
    evt.add_argument("--at", default=None, help="when: unix seconds or ISO 8601 (default now)")
    evt.add_argument("--description", default="", help="free text, e.g. the release")
    evt.set_defaults(func=cmd_event)

    rep = sub.add_parser("replay", help="run the pipeline as a batch over a stored range")
    rep.add_argument("--data", default="obscore-data", help="data directory (default obscore-data)")
    rep.add_argument("--config", default=None, help="obscore.toml to use")
    rep.add_argument("--from", dest="from_", default=None, help="start: unix seconds or ISO 8601 (default: oldest sample)")
    rep.add_argument("--to", default=None, help="end: unix seconds or ISO 8601 (default: newest sample)")
    rep.add_argument("--json", action="store_true", help="print anomalies, incidents and alerts as JSON")
    rep.set_defaults(func=cmd_replay)

    rpt = sub.add_parser("report", help="write the dashboard's pages over a stored range as static HTML")
    rpt.add_argument("--data", default="obscore-data", help="data directory (default obscore-data)")
    rpt.add_argument("--config", default=None, help="obscore.toml to use")
    rpt.add_argument("--from", dest="from_", default=None, help="start: unix seconds or ISO 8601 (default: oldest sample)")
    rpt.add_argument("--to", default=None, help="end: unix seconds or ISO 8601 (default: newest sample)")
    rpt.add_argument("--out", default="obscore-report", help="folder for report.html (default obscore-report)")
    rpt.set_defaults(func=cmd_report)

    ack = sub.add_parser("ack", help="acknowledge an alert: stop its escalation")
    ack.add_argument("fingerprint", help="the alert's fingerprint (a unique prefix will do)")
    ack.add_argument("--data", default="obscore-data", help="data directory (default obscore-data)")
    ack.add_argument("--by", default=None, help="who acknowledges (default: the login name)")
    ack.add_argument("--comment", default="", help="why, or what is being done")
    ack.set_defaults(func=cmd_ack)


def _out_dir_ready(out_dir: Path, command: str) -> bool:
    """Make ``--out`` (a folder) before any work; if it cannot be, say why in one line."""
    what = None
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        what = "is not a folder" if out_dir.exists() else f"cannot be made: {exc.strerror}"
    else:
        probe = out_dir / ".obscore-write-test"
        try:
            probe.touch()
            probe.unlink()
        except OSError as exc:
            what = f"cannot be written: {exc.strerror}"
    if what is not None:
        print(f"obscore {command}: --out {out_dir} {what}", file=sys.stderr)
    return what is None


def _data_dir_exists(args: argparse.Namespace, command: str, *, samples: bool = False) -> bool:
    """Whether ``--data`` names a directory (with ``samples``: one an engine
    has stored samples in); if not, say so: a typo must not make a new one,
    and a command that reads must not write a store into another folder."""
    data = Path(args.data)
    if not data.is_dir():
        print(f"obscore {command}: data directory {args.data!r} does not exist", file=sys.stderr)
        return False
    if samples and not any((data / name).exists() for name in ("wal.log", "series.parquet")):
        print(f"obscore {command}: {args.data!r} is not an obscore data directory "
              "(no wal.log or series.parquet in it)", file=sys.stderr)
        return False
    return True


def _alert_state_dir(args: argparse.Namespace, command: str) -> Path | None:
    return Path(args.data) / "alerts" if _data_dir_exists(args, command) else None


def cmd_silence(args: argparse.Namespace) -> int:
    """Silence alerts in a data directory; a running engine or server applies it at its next step."""
    import getpass

    from obscore.alert.lifecycle import append_request
    from obscore.alert.route import parse_matchers
    from obscore.durations import parse_duration
    from obscore.errors import ConfigError

    state_dir = _alert_state_dir(args, "silence")
    if state_dir is None:
        return 2
    try:
        matchers = parse_matchers(args.matcher)
        duration_ms = parse_duration(args.duration)
    except ConfigError as exc:
        print(f"obscore silence: {exc}", file=sys.stderr)
        return 2
    if not matchers or duration_ms <= 0:
        print("obscore silence: give at least one --matcher and a positive --duration", file=sys.stderr)
        return 2
    now = time.time_ns() // 1_000_000
    author = args.author or getpass.getuser()
    append_request(state_dir, {
        "kind": "silence", "matchers": [str(m) for m in matchers], "start_ms": now,
        "end_ms": now + duration_ms, "author": author, "comment": args.comment,
    })
    print(f"silence of {', '.join(map(str, matchers))} for {args.duration} by {author} recorded in "
          f"{state_dir}; the engine applies it at its next step")
    return 0


def cmd_decide(args: argparse.Namespace) -> int:
    """Approve or reject a remediation action that waits in a data directory."""
    import getpass

    from obscore.alert.lifecycle import append_request
    from obscore.alert.state import StateDir

    command = args.verdict
    state_dir = _alert_state_dir(args, command)
    if state_dir is None:
        return 2
    pending = StateDir(state_dir).load("remediation", {}).get("pending", []) if state_dir.is_dir() else []
    ids = {p["id"]: p for p in pending}
    if args.action_id not in ids:
        known = ", ".join(f"{p['id']} ({p['hook']})" for p in pending) or "none"
        print(f"obscore {command}: no remediation action {args.action_id!r} waits for approval in "
              f"{state_dir}; waiting: {known}", file=sys.stderr)
        return 2
    by = args.by or getpass.getuser()
    append_request(state_dir, {"kind": command, "action_id": args.action_id, "by": by})
    item = ids[args.action_id]
    print(f"{command} of action {args.action_id} ({item['hook']} for {item['alert']['summary']!r}, "
          f"severity {item['alert']['severity']:.2f}) by {by} recorded; the engine applies it at its next step")
    return 0


def _add_alert_commands(sub) -> None:
    """``silence``, ``approve`` and ``reject``: requests to the engine's alert lifecycle."""
    sil = sub.add_parser("silence", help="silence matching alerts for a while (the engine applies it)")
    sil.add_argument("--data", default="obscore-data", help="data directory (default obscore-data)")
    sil.add_argument("--matcher", action="append", required=True,
                     help="label matcher such as 'service=api' or 'region=~\"eu-.*\"' (repeatable)")
    sil.add_argument("--duration", required=True, help="how long, e.g. 2h or 30m")
    sil.add_argument("--author", default=None, help="who silences (default: the login name)")
    sil.add_argument("--comment", required=True, help="why")
    sil.set_defaults(func=cmd_silence)
    for verdict in ("approve", "reject"):
        p = sub.add_parser(verdict, help=f"{verdict} a remediation action that waits for approval")
        p.add_argument("action_id", help="the action's id (GET /api/v1/obscore/actions lists them)")
        p.add_argument("--data", default="obscore-data", help="data directory (default obscore-data)")
        p.add_argument("--by", default=None, help="who decides (default: the login name)")
        p.set_defaults(func=cmd_decide, verdict=verdict)


def cmd_bench(args: argparse.Namespace) -> int:
    import json

    from obscore import bench

    names = args.kernels.split(",") if args.kernels else None
    unknown = [n for n in names or [] if n not in bench.CASES]
    if unknown:
        print(f"obscore bench: unknown kernels {unknown!r}; known: {', '.join(bench.CASES)}", file=sys.stderr)
        return 2
    handicaps = {}
    for item in args.handicap or []:
        name, _, times = item.partition("=")
        if name not in bench.CASES or not (times or "10").isdigit() or int(times or 10) < 1:
            print(f"obscore bench: --handicap {item!r}: expected KERNEL=N with a known kernel and "
                  f"N a positive integer; known: {', '.join(bench.CASES)}", file=sys.stderr)
            return 2
        handicaps[name] = int(times or 10)
    baseline = None
    if args.check:  # read before the timings, which take a while
        try:
            baseline = bench.load_baseline(args.check)
            described = bench.describe_baseline(args.check)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else f"not a baseline file ({exc})"
            print(f"obscore bench: --check {args.check}: {why}", file=sys.stderr)
            return 2
    bar = tqdm(total=len(names or bench.CASES), desc="bench", unit="kernel", file=sys.stderr, disable=args.quiet)

    def progress(name: str) -> None:
        bar.set_postfix_str(name)
        bar.update()

    results, skipped = bench.run(names, full=args.full, repeat=args.repeat, handicaps=handicaps, progress=progress)
    bar.close()
    print(bench.table(results))
    for name, why in skipped.items():
        print(f"{name}: skipped, {why}")
    if args.json:
        Path(args.json).write_text(json.dumps({k: r.as_dict() for k, r in results.items()}, indent=2) + "\n")
        print(f"ratios written to {args.json}")
    if args.save_baseline:
        profile = bench.save_baseline(args.save_baseline, results)
        print(f"baseline of profile {profile!r} written to {args.save_baseline}")
    if baseline is not None:
        print(f"checking against {described}")
        problems = bench.check(results, baseline, args.tolerance)
        for attempt in range(args.retries):
            if not problems:
                break
            # a noisy neighbour slows one side more than the other: time the
            # failing kernels again and keep each one's best ratio
            again = [p.split(":")[0] for p in problems]
            print(f"re-timing {', '.join(again)} (retry {attempt + 1} of {args.retries})")
            rerun, _ = bench.run(again, full=args.full, repeat=args.repeat, handicaps=handicaps)
            for name, r in rerun.items():
                if r.ratio > results[name].ratio:
                    results[name] = r
            problems = bench.check(results, baseline, args.tolerance)
        for line in problems:
            print(f"REGRESSION {line}")
        if problems:
            return 1
        print(f"no kernel fell more than {args.tolerance:.0%} below the baseline")
    return 0


def _add_bench_command(sub: argparse._SubParsersAction) -> None:
    b = sub.add_parser("bench", help="time the native kernels against their references and print the ratios")
    b.add_argument("--kernels", default=None, help="comma-separated cases (default: all)")
    b.add_argument("--full", action="store_true", help="the full sizes of benchmarks/ (default: short sizes)")
    b.add_argument("--repeat", type=int, default=3, help="timings per side; the fastest counts (default 3)")
    b.add_argument("--json", default=None, metavar="FILE", help="write {kernel: {ours, reference, ratio}} to FILE")
    b.add_argument("--save-baseline", default=None, metavar="BASELINE", help="write these ratios as this machine profile's entry of BASELINE (other profiles kept)")
    b.add_argument("--check", default=None, metavar="BASELINE", help="exit 1 when a ratio falls below its baseline less --tolerance")
    b.add_argument("--tolerance", type=float, default=0.25, help="allowed fall below the baseline ratio (default 0.25)")
    b.add_argument("--retries", type=int, default=0, help="with --check: re-time failing kernels up to N times (default 0)")
    b.add_argument("--handicap", action="append", metavar="KERNEL=N", help="run our KERNEL N times per timing (to see --check fail)")
    b.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    b.set_defaults(func=cmd_bench)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="obscore", description="An embeddable observability engine.")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="log more (-v info, -vv debug)")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="simulate a platform with incidents and run the whole engine on it")
    demo.add_argument("--out", default="obscore-out", help="folder for the report (default: obscore-out)")
    demo.add_argument("--seed", type=int, default=0, help="simulation seed (default 0)")
    demo.add_argument("--hours", type=float, default=24.0, help="hours simulated (default 24)")
    demo.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    demo.set_defaults(func=cmd_demo)

    det = sub.add_parser("detect", help="score timestamp,value CSV files as streams")
    det.add_argument("paths", nargs="+", help="CSV files or folders (walked for *.csv)")
    det.add_argument("--out", required=True, help="folder for the scored CSV files")
    det.add_argument("--detector", default=None, help="registered detector name (default: the config's detectors.default)")
    det.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                     help="import a module (name, or path of a .py file) that registers detectors; repeatable")
    det.add_argument("--config", default=None, help="obscore.toml to use")
    det.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    det.set_defaults(func=cmd_detect)

    ing = sub.add_parser("ingest", help="ingest CSV, Parquet, Arrow IPC and Prometheus text / OpenMetrics files")
    ing.add_argument("paths", nargs="+",
                     help="files, folders (walked for .csv .parquet .arrow .prom ...), or - for standard input")
    ing.add_argument("--data", default="obscore-data", help="data directory (default obscore-data)")
    ing.add_argument("--config", default=None, help="obscore.toml to use")
    ing.add_argument("--format", choices=["prometheus", "openmetrics", "csv", "parquet", "arrow"], default=None,
                     help="default: recognised by content, then file name")
    ing.add_argument("--metric", default=None,
                     help="metric name of timestamp,value tables (default: from the file name)")
    ing.add_argument("--dry-run", action="store_true", help="only parse and validate: exit 2 naming the file, line and reason")
    ing.add_argument("--strict", action="store_true", help="refuse a file at its first bad line")
    ing.add_argument("--declare", action="store_true",
                     help="declare unknown metrics (from TYPE lines; tables as gauges)")
    ing.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    ing.set_defaults(func=cmd_ingest)

    scr = sub.add_parser("scrape", help="scrape Prometheus targets into a data directory")
    scr.add_argument("urls", nargs="*", help="/metrics URLs (default: the [[scrape]] targets of the config)")
    scr.add_argument("--interval", default="15s", help="time between scrapes of the URLs given (default 15s)")
    scr.add_argument("--duration", default="30s", help="how long to scrape (default 30s; Ctrl-C ends early)")
    scr.add_argument("--job", default="scrape", help="job label of the URLs given (default scrape)")
    scr.add_argument("--data", default="obscore-data", help="data directory (default obscore-data)")
    scr.add_argument("--config", default=None, help="obscore.toml to use")
    scr.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    scr.set_defaults(func=cmd_scrape)

    ev = sub.add_parser("eval", help="evaluate detectors or diagnosis on labelled benchmarks")
    ev.add_argument("suite", choices=["nab", "smd", "rca", "grouping"], help="which benchmark")
    ev.add_argument("path", help="the benchmark's folder (e.g. ../shared/data/nab; for --dataset sim, any path)")
    ev.add_argument("--detector", default=None, help="registered detector name (nab; default: the config's detectors.default)")
    ev.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                    help="nab: import a module (name, or path of a .py file) that registers detectors; repeatable")
    ev.add_argument("--threshold", type=float, default=None, help="declared alert threshold (default: the config's detectors.threshold, 0.5)")
    ev.add_argument("--config", default=None, help="obscore.toml to use (nab: detectors.default and .threshold)")
    ev.add_argument("--dataset", default="sim", choices=["sim", "sockshop1", "petshop", "smd"],
                    help="rca dataset layout (default sim)")
    ev.add_argument("--cases", type=int, default=None,
                    help="rca sim: incidents to inject (default 100); grouping: simulated runs (default 50)")
    ev.add_argument("--seed", type=int, default=0,
                    help="grouping: seed of the first run, the others following it (default 0)")
    ev.add_argument("--json", action="store_true", help="print the full result as JSON")
    ev.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    ev.set_defaults(func=cmd_eval)

    srv = sub.add_parser("serve", help="serve the HTTP API (Prometheus/Alertmanager-shaped) and the dashboard")
    srv.add_argument("--data", default=None, help="data directory (default: in memory)")
    srv.add_argument("--config", default=None, help="obscore.toml to use")
    srv.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    srv.add_argument("--port", type=_port, default=9464, help="port, 1-65535 (default 9464)")
    srv.add_argument("--token", default=None, help="bearer token for writes (or OBSCORE_TOKEN); required off loopback")
    srv.add_argument("--simulate", action="store_true", help="fill the engine with a simulated day and run the pipeline")
    srv.add_argument("--declare", action="store_true", help="declare metrics the config does not know when pushed")
    srv.add_argument("--max-body-mb", type=int, default=32, help="largest request body in MiB (default 32)")
    srv.add_argument("--max-series", type=int, default=10_000, help="most series one query may return (default 10000)")
    srv.set_defaults(func=cmd_serve)
    _add_pipeline_commands(sub)
    _add_alert_commands(sub)
    _add_bench_command(sub)
    return parser


class _Logged(logging.Filter):
    """Remembers the last lines the log printed, so a warning saying the same is not shown twice."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: deque[str] = deque(maxlen=64)

    def filter(self, record: logging.LogRecord) -> bool:
        self.lines.append(record.getMessage())
        return True


def _quiet_warnings(logged: _Logged) -> None:
    """Show a Python warning as one line, without the file and line of obscore's
    code that raised it, and not at all when the log has just said it."""
    import warnings

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        text = str(message)
        if not any(text in seen for seen in logged.lines):
            print(f"WARNING {category.__name__}: {text}", file=sys.stderr)

    warnings.showwarning = show


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    logged = _Logged()
    for handler in logging.getLogger().handlers:
        for old in [f for f in handler.filters if isinstance(f, _Logged)]:
            handler.removeFilter(old)  # main() run again in one process
        handler.addFilter(logged)
    _quiet_warnings(logged)
    from obscore.errors import ObscoreError

    try:
        return args.func(args)
    except ObscoreError as exc:  # a bad config, input or argument: the message says which
        print(f"obscore {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
