"""Harness of the end-to-end tests: a local cluster started and stopped by the test, the
single-process engine (`longcat generate`) as the independent reference, metrics scraping,
deadlines.

Everything runs on 127.0.0.1; every wait has a deadline; the cluster is stopped in a finally
block (and by a watchdog thread if the test overruns its own deadline), and on failure the tail
of every process log is printed.
"""

from __future__ import annotations

import concurrent.futures
import copy
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

SOURCE_DIR = Path(__file__).resolve().parents[2]
MODEL_NAME = "longcat-tiny-b"  # the gateway's served-model-name in every topology here
LOG_TAIL_LINES = 60


class TestFailure(AssertionError):
    pass


def check(condition: bool, message: str) -> None:
    if not condition:
        raise TestFailure(message)


def check_eq(actual, expected, what: str) -> None:
    if actual != expected:
        raise TestFailure(f"{what}: got {actual!r}, expected {expected!r}")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def poll(condition: Callable[[], object], timeout_s: float, what: str, interval_s: float = 0.05):
    """Calls condition() until it returns a true value or the deadline passes (then fails,
    naming `what` and the last value or exception)."""
    deadline = time.monotonic() + timeout_s
    last: object = None
    while True:
        try:
            last = condition()
            if last:
                return last
        except (OSError, http.client.HTTPException, ValueError) as e:
            last = e
        if time.monotonic() >= deadline:
            raise TestFailure(f"timed out after {timeout_s:.1f} s waiting for {what} (last: {last!r})")
        time.sleep(interval_s)


def first_difference(a: str, b: str) -> str:
    n = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    return f"first difference at character {n}: got {a[n:n + 30]!r}, expected {b[n:n + 30]!r}"


def check_text(actual: str, expected: str, what: str, source: str = "the engine's") -> None:
    if actual != expected:
        raise TestFailure(f"{what}: text differs from {source} ({len(actual)} vs {len(expected)} "
                          f"characters; {first_difference(actual, expected)})\n  got:      {actual!r}\n"
                          f"  expected: {expected!r}")


# -- HTTP ----------------------------------------------------------------------------------------

def http_request(host: str, port: int, method: str, path: str, body: bytes | None = None,
                 headers: dict | None = None, timeout_s: float = 30.0):
    """One request on a fresh connection (http.client ignores proxy settings) → (status,
    headers with lower-case names, body bytes)."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout_s)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        data = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, data
    finally:
        conn.close()


_METRIC_LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)')


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text format → {"name" or "name{labels}": value}."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _METRIC_LINE.match(line)
        if m:
            out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return out


# -- the reference engine ------------------------------------------------------------------------

@dataclass
class Reference:
    text: str
    ids: list[int]
    prompt_tokens: int
    finish_reason: str  # "stop" when the last id is EOS, else "length"


class Engine:
    """`longcat generate` (the single-process engine) on the test's model: the reference."""

    def __init__(self, cli: str, model_dir: Path, eos_token_id: int):
        self.cli = cli
        self.model_dir = model_dir
        self.eos = eos_token_id

    def generate(self, prompt: str, *, chat: bool, max_tokens: int, system: str | None = None,
                 temperature: float = 0.0, seed: int | None = None, timeout_s: float = 120.0) -> Reference:
        args = [self.cli, "generate", "--model", str(self.model_dir), "--prompt", prompt,
                "--max-tokens", str(max_tokens), "--temperature", repr(float(temperature)),
                "--threads", "1", "--ids"]
        if chat:
            args.append("--chat")
        if system is not None:
            args += ["--system", system]
        if seed is not None:
            args += ["--seed", str(seed)]
        r = subprocess.run(args, capture_output=True, timeout=timeout_s)
        err = r.stderr.decode("utf-8", "replace")
        if r.returncode != 0:
            raise TestFailure(f"reference engine failed (exit {r.returncode}): {' '.join(args[:3])} ...\n{err}")
        check(r.stdout.endswith(b"\n"), f"engine stdout does not end with a newline: {r.stdout[-40:]!r}")
        text = r.stdout[:-1].decode("utf-8")  # strict: the engine never prints a partial character
        m_prompt = re.search(r"^prompt: (\d+) tokens$", err, re.M)
        m_ids = re.search(r"^ids:([ 0-9]*)$", err, re.M)
        check(m_prompt is not None and m_ids is not None, f"engine stderr without prompt/ids lines:\n{err}")
        ids = [int(x) for x in m_ids.group(1).split()]
        finish = "stop" if ids and ids[-1] == self.eos else "length"
        if finish == "length":
            check_eq(len(ids), max_tokens, "engine: tokens of a generation that did not stop at EOS")
        return Reference(text, ids, int(m_prompt.group(1)), finish)

    def count_prompt_tokens(self, prompt: str, *, chat: bool) -> int:
        return self.generate(prompt, chat=chat, max_tokens=1).prompt_tokens


def run_parallel(calls: Iterable[Callable[[], object]], workers: int = 2, timeout_s: float = 300.0) -> list:
    """Runs the calls on `workers` threads; returns their results in order (re-raises the first
    exception)."""
    calls = list(calls)
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(c) for c in calls]
        done, not_done = concurrent.futures.wait(futures, timeout=timeout_s)
        if not_done:
            for f in not_done:
                f.cancel()
            raise TestFailure(f"{len(not_done)} of {len(calls)} parallel calls did not finish within {timeout_s} s")
        return [f.result() for f in futures]


# -- the cluster ---------------------------------------------------------------------------------

@dataclass
class Process:
    name: str
    role: str
    pid: int
    metrics_port: int
    log_file: str


@dataclass
class Cluster:
    state_file: Path
    gateway_url: str
    gateway_host: str
    gateway_port: int
    processes: list[Process]
    topology: dict
    kv_pages: int

    def by_role(self, role: str) -> list[Process]:
        return [p for p in self.processes if p.role == role]

    def metrics(self, process: Process) -> dict[str, float]:
        status, _, body = http_request("127.0.0.1", process.metrics_port, "GET", "/metrics", timeout_s=10)
        check_eq(status, 200, f"GET /metrics of {process.name}")
        return parse_metrics(body.decode())

    def process_alive(self, process: Process) -> bool:
        """Running, not a zombie."""
        try:
            with open(f"/proc/{process.pid}/stat") as f:
                stat = f.read()
        except OSError:
            return False
        return stat[stat.rindex(")") + 2] not in "ZX"

    def check_all_alive(self) -> None:
        dead = [f"{p.name} (pid {p.pid})" for p in self.processes if not self.process_alive(p)]
        check(not dead, f"processes died: {', '.join(dead)}")

    def kv_state(self) -> dict:
        coordinator = self.metrics(self.by_role("coordinator")[0])
        state = {
            "coordinator longcat_kv_pages_reserved": coordinator.get("longcat_kv_pages_reserved"),
            "coordinator longcat_running_requests": coordinator.get("longcat_running_requests"),
            "coordinator longcat_queue_depth": coordinator.get("longcat_queue_depth"),
        }
        for worker in self.by_role("attention"):
            state[f"{worker.name} longcat_kv_pages_free"] = self.metrics(worker).get("longcat_kv_pages_free")
        return state

    def check_all_pages_free(self, timeout_s: float = 30.0) -> None:
        """Polls until the coordinator holds no reservation, runs and queues nothing, and every
        attention worker's free KV pages equal its pool (the topology's kv_pages)."""
        expected = {
            "coordinator longcat_kv_pages_reserved": 0.0,
            "coordinator longcat_running_requests": 0.0,
            "coordinator longcat_queue_depth": 0.0,
        }
        for worker in self.by_role("attention"):
            expected[f"{worker.name} longcat_kv_pages_free"] = float(self.kv_pages)
        last = {}

        def settled():
            nonlocal last
            last = self.kv_state()
            return last == expected

        try:
            poll(settled, timeout_s, "every KV page to be free and no request running or queued", 0.1)
        except TestFailure:
            raise TestFailure(f"after {timeout_s} s the cluster still holds requests or KV pages:\n"
                              f"  got:      {last}\n  expected: {expected}")


class ClusterTest:
    """One test's world: a temp dir, a tiny-b checkpoint, the reference engine, and (in
    cluster()) a local cluster of the given topology overrides."""

    def __init__(self, name: str, cli: str, deadline_s: float):
        self.name = name
        self.cli = cli
        self.deadline_s = deadline_s
        self.dir = Path(tempfile.mkdtemp(prefix=f"longcat-e2e-{name}-"))
        self.model_dir = self.dir / "model"
        self.cluster_obj: Cluster | None = None
        self.up_output = ""
        self._down_lock = threading.Lock()
        self._stopped = False
        self.started_at = time.monotonic()
        r = subprocess.run([cli, "mkmodel", "--preset", "tiny-b", "--seed", "0", "--dtype", "fp32",
                            "--out", str(self.model_dir)], capture_output=True, timeout=120)
        if r.returncode != 0:
            raise TestFailure(f"mkmodel failed: {r.stderr.decode(errors='replace')}")
        self.config = json.loads((self.model_dir / "config.json").read_text())
        self.engine = Engine(cli, self.model_dir, int(self.config["eos_token_id"]))
        self._watchdog = threading.Thread(target=self._watch, daemon=True)
        self._watchdog.start()

    # The watchdog: if the test overruns its deadline (a wait without one, a hang in a client),
    # stop the cluster and exit, so no process outlives the test even when ctest would kill it.
    def _watch(self) -> None:
        while time.monotonic() - self.started_at < self.deadline_s:
            time.sleep(0.5)
            if self._stopped:
                return
        print(f"\n{self.name}: FAILED: the test's own deadline of {self.deadline_s:.0f} s passed; "
              f"stack of every thread:", flush=True)
        for thread_id, frame in sys._current_frames().items():
            print(f"--- thread {thread_id}", flush=True)
            traceback.print_stack(frame)
        self.print_logs()
        self.stop()
        os._exit(3)

    def start_cluster(self, overrides: dict | None = None, gateway: dict | None = None,
                      timeout_s: float = 120.0) -> Cluster:
        topology = json.loads((SOURCE_DIR / "deploy/local/default.json").read_text())
        topology = copy.deepcopy(topology)
        topology.update(overrides or {})
        topology["gateway"] = {"served-model-name": MODEL_NAME, **(gateway or {})}
        topology_file = self.dir / "topology.json"
        topology_file.write_text(json.dumps(topology, indent=2))
        state_file = self.dir / "cluster" / "state.json"
        t0 = time.monotonic()
        try:
            r = subprocess.run([self.cli, "cluster", "up", "--topology", str(topology_file), "--model",
                                str(self.model_dir), "--state", str(state_file), "--timeout-s",
                                str(int(timeout_s))], capture_output=True, timeout=timeout_s + 30)
            self.up_output = (r.stdout + r.stderr).decode(errors="replace")
        except subprocess.TimeoutExpired as e:
            self.up_output = ((e.stdout or b"") + (e.stderr or b"")).decode(errors="replace")
            raise TestFailure(f"`longcat cluster up` did not return within {timeout_s + 30} s")
        finally:
            if state_file.exists():
                self._load_state(state_file, topology)
        if r.returncode != 0:
            raise TestFailure(f"`longcat cluster up` failed (exit {r.returncode}):\n{self.up_output}")
        check(self.cluster_obj is not None, "`longcat cluster up` wrote no state file")
        log(f"cluster up in {time.monotonic() - t0:.1f} s; gateway {self.cluster_obj.gateway_url}")
        return self.cluster_obj

    def _load_state(self, state_file: Path, topology: dict) -> None:
        state = json.loads(state_file.read_text())
        processes = [Process(p["name"], p["role"], int(p["pid"]), int(p["metrics_port"]), p["log_file"])
                     for p in state["processes"]]
        url = state.get("gateway_url", "")
        m = re.fullmatch(r"http://([0-9.]+):(\d+)", url)
        check(m is not None, f"state file gateway_url is {url!r}")
        self.cluster_obj = Cluster(state_file, url, m.group(1), int(m.group(2)), processes, topology,
                                   int(topology.get("kv_pages", 1024)))

    def stop(self) -> str | None:
        """`longcat cluster down`, then makes sure none of the started pids is still running;
        returns what went wrong (None when every process stopped)."""
        with self._down_lock:
            if self._stopped:
                return None
            self._stopped = True
            c = self.cluster_obj
            if c is None:
                return None
            problems = []
            try:
                r = subprocess.run([self.cli, "cluster", "down", "--state", str(c.state_file)],
                                   capture_output=True, timeout=60)
                if r.returncode != 0:
                    problems.append(f"`longcat cluster down` exit {r.returncode}: "
                                    f"{(r.stdout + r.stderr).decode(errors='replace')}")
            except subprocess.TimeoutExpired:
                problems.append("`longcat cluster down` did not return within 60 s")
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and any(c.process_alive(p) for p in c.processes):
                time.sleep(0.1)
            for p in c.processes:
                if c.process_alive(p):
                    problems.append(f"{p.name} (pid {p.pid}) still running 15 s after `cluster down`: SIGKILL")
                    try:
                        os.kill(p.pid, signal.SIGKILL)
                    except OSError:
                        pass
            for problem in problems:
                print(problem, flush=True)
            return "; ".join(problems) or None

    def print_logs(self) -> None:
        if self.up_output:
            print(f"--- `longcat cluster up` output:\n{self.up_output}", flush=True)
        c = self.cluster_obj
        if c is None:
            return
        for p in c.processes:
            try:
                lines = Path(p.log_file).read_text(errors="replace").splitlines()
            except OSError as e:
                lines = [f"(cannot read: {e})"]
            print(f"--- {p.name} ({p.role}, pid {p.pid}) {p.log_file}, last {LOG_TAIL_LINES} of {len(lines)} lines:",
                  flush=True)
            for line in lines[-LOG_TAIL_LINES:]:
                print(f"    {line}")
        sys.stdout.flush()

    def cleanup(self, passed: bool) -> None:
        if passed or not os.environ.get("LONGCAT_E2E_KEEP"):
            shutil.rmtree(self.dir, ignore_errors=True)
        else:
            print(f"kept {self.dir} (LONGCAT_E2E_KEEP)", flush=True)


def main(tests: dict[str, Callable[[ClusterTest], None]], deadlines: dict[str, float]) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="end-to-end tests of the serving cluster")
    parser.add_argument("test", choices=sorted(tests))
    parser.add_argument("--cli", required=True, help="path of the `longcat` binary")
    args = parser.parse_args()
    name = args.test
    t0 = time.monotonic()
    world = ClusterTest(name, os.path.abspath(args.cli), deadlines[name])

    def on_sigterm(signum, frame):  # ctest's kill, Ctrl-C: stop the cluster first
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_sigterm)
    passed = False
    try:
        tests[name](world)
        passed = True
    except BaseException:
        print(f"\n{name}: FAILED after {time.monotonic() - t0:.1f} s", flush=True)
        traceback.print_exc()
        sys.stderr.flush()
        world.print_logs()
    finally:
        problem = world.stop()
        if problem and passed:
            print(f"\n{name}: FAILED at the end: {problem}", flush=True)
            world.print_logs()
            passed = False
        world.cleanup(passed)
    if passed:
        print(f"{name}: passed in {time.monotonic() - t0:.1f} s", flush=True)
    return 0 if passed else 1
