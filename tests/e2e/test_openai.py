#!/usr/bin/env python3
"""End-to-end tests of the serving cluster through its OpenAI-compatible gateway, with the
official `openai` Python client (and raw HTTP where a client must misbehave).

    test_openai.py TEST --cli build/dev/services/longcat/longcat

TEST is one of: chat_and_completions, concurrent_streams, stop_strings, seed, bad_input,
disconnect, overload. Each starts its own cluster (deploy/local/default.json with overrides: a
coordinator, TP=2 attention workers, 3 expert groups, longcat-gateway) on 127.0.0.1 in a temp
dir, compares with the single-process engine (`longcat generate`), and stops the cluster.
Run it with build/venv-test/bin/python (ops/scripts/test-venv.sh makes it).
"""

from __future__ import annotations

import json
import select
import socket
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx  # noqa: E402  (installed with openai)
import openai  # noqa: E402

from e2e_cluster import (MODEL_NAME, Cluster, ClusterTest, Reference, TestFailure, check,  # noqa: E402
                         check_eq, check_text, http_request, log, main, poll, run_parallel)

CLIENT_TIMEOUT_S = 120.0


def make_client(c: Cluster, max_connections: int = 64) -> openai.OpenAI:
    http_client = httpx.Client(trust_env=False, timeout=CLIENT_TIMEOUT_S,
                               limits=httpx.Limits(max_connections=max_connections,
                                                   max_keepalive_connections=max_connections))
    return openai.OpenAI(base_url=c.gateway_url + "/v1", api_key="e2e-unused", max_retries=0,
                         timeout=CLIENT_TIMEOUT_S, http_client=http_client)


@dataclass
class Case:
    prompt: str
    chat: bool
    max_tokens: int
    system: str | None = None


def reference(t: ClusterTest, case: Case, **sampling) -> Reference:
    return t.engine.generate(case.prompt, chat=case.chat, max_tokens=case.max_tokens, system=case.system,
                             **sampling)


def create(client: openai.OpenAI, case: Case, **kwargs):
    if case.chat:
        messages = ([{"role": "system", "content": case.system}] if case.system is not None else [])
        messages.append({"role": "user", "content": case.prompt})
        return client.chat.completions.create(model=MODEL_NAME, messages=messages, max_tokens=case.max_tokens,
                                              **kwargs)
    check(case.system is None, "a completions case has no system prompt")
    return client.completions.create(model=MODEL_NAME, prompt=case.prompt, max_tokens=case.max_tokens, **kwargs)


def result_text(case: Case, response) -> str:
    choice = response.choices[0]
    return (choice.message.content or "") if case.chat else choice.text


def check_response(case: Case, response, ref: Reference, what: str, expected_text: str | None = None,
                   expected_finish: str | None = None) -> None:
    """A non-streaming response against the engine's reference: text, finish_reason, usage."""
    check_eq(response.object, "chat.completion" if case.chat else "text_completion", f"{what}: object")
    check(response.id.startswith("chatcmpl-" if case.chat else "cmpl-"), f"{what}: id {response.id!r}")
    check_eq(response.model, MODEL_NAME, f"{what}: model")
    check_eq(len(response.choices), 1, f"{what}: number of choices")
    if case.chat:
        check_eq(response.choices[0].message.role, "assistant", f"{what}: role")
    check_text(result_text(case, response), ref.text if expected_text is None else expected_text, what)
    check_eq(response.choices[0].finish_reason, expected_finish or ref.finish_reason, f"{what}: finish_reason")
    check(response.usage is not None, f"{what}: no usage")
    check_eq(response.usage.prompt_tokens, ref.prompt_tokens, f"{what}: usage.prompt_tokens")
    if expected_text is None:
        check_eq(response.usage.completion_tokens, len(ref.ids), f"{what}: usage.completion_tokens")
    check_eq(response.usage.total_tokens, response.usage.prompt_tokens + response.usage.completion_tokens,
             f"{what}: usage.total_tokens")


@dataclass
class StreamResult:
    text: str
    finish_reason: str | None
    usage: object
    chunks: int
    first_text_at: float | None
    ended_at: float


def collect_stream(case: Case, stream, what: str, include_usage: bool, on_text=None) -> StreamResult:
    """Reads a stream to its end, checking the shape of every chunk: one id, the model, role first
    (chat), exactly one finish_reason, and with include_usage a last chunk with usage and no
    choices while every other chunk has usage null."""
    text = ""
    finish_reason = None
    usage = None
    chunks = 0
    response_id = None
    first_text_at = None
    for chunk in stream:
        chunks += 1
        check(usage is None, f"{what}: a chunk after the usage chunk")
        check_eq(chunk.object, "chat.completion.chunk" if case.chat else "text_completion", f"{what}: chunk object")
        check_eq(chunk.model, MODEL_NAME, f"{what}: chunk model")
        response_id = response_id or chunk.id
        check_eq(chunk.id, response_id, f"{what}: chunk id")
        if chunk.usage is not None:
            check(include_usage, f"{what}: usage chunk without stream_options.include_usage")
            check_eq(len(chunk.choices), 0, f"{what}: choices of the usage chunk")
            usage = chunk.usage
            continue
        check_eq(len(chunk.choices), 1, f"{what}: choices of a chunk")
        choice = chunk.choices[0]
        if case.chat:
            if chunks == 1:
                check_eq(choice.delta.role, "assistant", f"{what}: role of the first chunk")
            piece = choice.delta.content or ""
        else:
            piece = choice.text or ""
        if piece:
            check(finish_reason is None, f"{what}: text after the finish_reason chunk")
            if first_text_at is None:
                first_text_at = time.monotonic()
            text += piece
            if on_text is not None:
                on_text(text)
        if choice.finish_reason is not None:
            check(finish_reason is None, f"{what}: two chunks with a finish_reason")
            finish_reason = choice.finish_reason
    check(finish_reason is not None, f"{what}: the stream ended without a finish_reason")
    if include_usage:
        check(usage is not None, f"{what}: no usage chunk although include_usage was asked")
    return StreamResult(text, finish_reason, usage, chunks, first_text_at, time.monotonic())


def check_stream(case: Case, result: StreamResult, ref: Reference, what: str, expected_text: str | None = None,
                 expected_finish: str | None = None) -> None:
    check_text(result.text, ref.text if expected_text is None else expected_text, what)
    check_eq(result.finish_reason, expected_finish or ref.finish_reason, f"{what}: finish_reason")
    if result.usage is not None:
        check_eq(result.usage.prompt_tokens, ref.prompt_tokens, f"{what}: usage.prompt_tokens")
        if expected_text is None:
            check_eq(result.usage.completion_tokens, len(ref.ids), f"{what}: usage.completion_tokens")
        check_eq(result.usage.total_tokens, result.usage.prompt_tokens + result.usage.completion_tokens,
                 f"{what}: usage.total_tokens")


def stream(client: openai.OpenAI, case: Case, what: str, include_usage: bool = True, on_text=None,
           **kwargs) -> StreamResult:
    options = {"stream_options": {"include_usage": True}} if include_usage else {}
    s = create(client, case, stream=True, **options, **kwargs)
    try:
        return collect_stream(case, s, what, include_usage, on_text)
    finally:
        s.close()


def start_with_references(t: ClusterTest, cases: list[Case], cluster_kwargs: dict | None = None,
                          **sampling) -> tuple[Cluster, list[Reference]]:
    """Starts the cluster while the engine computes the references (two threads)."""
    results = run_parallel([lambda: t.start_cluster(**(cluster_kwargs or {}))] +
                           [lambda case=case: reference(t, case, **sampling) for case in cases])
    return results[0], results[1:]


def describe(case: Case) -> str:
    return f"{'chat' if case.chat else 'completions'} {case.prompt[:40]!r} max_tokens={case.max_tokens}"


WORDS = ["license", "software", "warranty", "copyright", "notice", "source", "binary", "freedom",
         "permission", "library", "patent", "contributor", "distribution", "modification", "program",
         "document"]


# -- a. chat and completions, streaming and not ----------------------------------------------------

def test_chat_and_completions(t: ClusterTest) -> None:
    cases = [
        Case("Hello there", chat=True, max_tokens=40),
        Case("the binary", chat=True, max_tokens=64),  # greedy tiny-b (seed 0) ends at EOS after 42
        Case("Summarize the license in one line", chat=True, max_tokens=32, system="You are terse."),
        Case("Once upon a time", chat=False, max_tokens=40),
        Case("the work", chat=False, max_tokens=64),  # EOS after 26
        Case("to GNU", chat=False, max_tokens=8),  # EOS first: empty text
    ]
    c, refs = start_with_references(t, cases)
    finishes = {r.finish_reason for r in refs}
    check(finishes == {"stop", "length"} and any(r.text == "" for r in refs),
          "the chosen prompts no longer cover EOS, length and an empty output on this model "
          f"(finish reasons {[r.finish_reason for r in refs]}); pick new prompts")
    client = make_client(c)

    models = client.models.list()
    check_eq([m.id for m in models.data], [MODEL_NAME], "GET /v1/models ids")
    status, _, body = http_request(c.gateway_host, c.gateway_port, "GET", "/v1/models")
    check_eq(status, 200, "GET /v1/models status")
    listed = json.loads(body)
    check_eq(listed["object"], "list", "GET /v1/models object")
    check_eq(listed["data"][0]["object"], "model", "GET /v1/models data[0].object")
    check_eq(listed["data"][0].get("max_model_len"), t.config["max_position_embeddings"],
             "GET /v1/models max_model_len (config.json max_position_embeddings)")

    for case, ref in zip(cases, refs):
        what = describe(case)
        check_response(case, create(client, case, temperature=0), ref, what + " (non-streaming)")
        result = stream(client, case, what + " (stream, include_usage)", temperature=0)
        check_stream(case, result, ref, what + " (stream, include_usage)")
        log(f"ok: {what}: {len(ref.ids)} tokens, finish_reason {ref.finish_reason}")
    for case, ref in zip(cases, refs):
        if case.max_tokens == 40:  # one per route: streaming without include_usage has no usage chunk
            what = describe(case) + " (stream, no usage)"
            result = stream(client, case, what, include_usage=False, temperature=0)
            check(result.usage is None, f"{what}: usage chunk")
            check_stream(case, result, ref, what)
    c.check_all_pages_free()
    c.check_all_alive()


# -- b. 32 concurrent streams ----------------------------------------------------------------------

def test_concurrent_streams(t: ClusterTest) -> None:
    n = 32
    cases = [Case(f"Request {i}: tell me about the {WORDS[i % len(WORDS)]}", chat=(i % 2 == 0),
                  max_tokens=24 + 8 * (i % 4)) for i in range(n)]
    c, refs = start_with_references(t, cases, {"overrides": {"max_batch": 32},
                                               "gateway": {"max-running-per-backend": 32, "queue-bound": 64}})
    client = make_client(c, max_connections=n + 4)
    barrier = threading.Barrier(n, timeout=60)
    results: list[StreamResult | BaseException | None] = [None] * n

    def one(i: int) -> None:
        try:
            barrier.wait()
            results[i] = stream(client, cases[i], f"stream {i}", temperature=0)
        except BaseException as e:  # reported below
            results[i] = e

    t0 = time.monotonic()
    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=max(1.0, 150 - (time.monotonic() - t0)))
    check(not any(th.is_alive() for th in threads), "streams still running after 150 s")
    elapsed = time.monotonic() - t0
    for i, (case, ref, result) in enumerate(zip(cases, refs, results)):
        if isinstance(result, BaseException):
            raise TestFailure(f"stream {i} ({describe(case)}) failed: {result!r}") from result
        check_stream(case, result, ref, f"stream {i} ({describe(case)})")
    # The streams really ran together: most of them were producing text at one moment.
    events = sorted([(r.first_text_at, 1) for r in results] + [(r.ended_at, -1) for r in results])
    active = most = 0
    for _, delta in events:
        active += delta
        most = max(most, active)
    log(f"{n} streams equal to the engine in {elapsed:.1f} s; at most {most} streaming at once")
    check(most >= n // 4, f"only {most} of {n} streams were producing text at the same time")
    c.check_all_pages_free()
    c.check_all_alive()


# -- c. stop strings -------------------------------------------------------------------------------

def cut_at_stops(text: str, stops: list[str]) -> tuple[str, bool]:
    """The reference cut: before the stop string whose first occurrence ends earliest (ties: the
    one that starts earliest)."""
    best = None
    for s in stops:
        start = text.find(s)
        if start >= 0 and (best is None or (start + len(s), start) < best):
            best = (start + len(s), start)
    return (text[:best[1]], True) if best else (text, False)


def pick_stop(text: str, at: float, length: int = 3) -> str:
    """A printable-ASCII substring near `at` (fraction of the text) whose first occurrence has text
    before and after it."""
    n = len(text)
    for offset in list(range(int(n * at), n - length)) + list(range(int(n * at), 0, -1)):
        s = text[offset:offset + length]
        first = text.find(s)
        if all(32 <= ord(ch) < 127 for ch in s) and s.strip() and 4 <= first <= n - length - 4:
            return s
    raise TestFailure(f"no usable stop string in the reference text {text!r}")


def test_stop_strings(t: ClusterTest) -> None:
    cases = [Case("Tell me about the warranty", chat=True, max_tokens=64),
             Case("Permission is hereby granted", chat=False, max_tokens=64)]
    c, refs = start_with_references(t, cases)
    client = make_client(c)
    chat_case, comp_case = cases
    chat_ref, comp_ref = refs

    runs = []
    s1 = pick_stop(chat_ref.text, 0.5)
    runs.append((chat_case, chat_ref, s1))  # a single string, not a list
    late, early = pick_stop(comp_ref.text, 0.7, 4), pick_stop(comp_ref.text, 0.35, 2)
    runs.append((comp_case, comp_ref, [late, "\u2603 never there", early]))
    runs.append((chat_case, chat_ref, ["\u2603 never there"]))  # control: no stop → length, full text
    for case, ref, stop in runs:
        stops = [stop] if isinstance(stop, str) else stop
        expected, matched = cut_at_stops(ref.text, stops)
        expected_finish = "stop" if matched else ref.finish_reason
        what = f"{describe(case)} stop={stop!r}"
        log(f"{what}: expect {len(expected)} of {len(ref.text)} characters, finish_reason {expected_finish}")
        response = create(client, case, temperature=0, stop=stop)
        check_response(case, response, ref, what + " (non-streaming)", expected, expected_finish)
        if matched:
            tokens = response.usage.completion_tokens
            check(1 <= tokens < len(ref.ids),
                  f"{what}: completion_tokens {tokens} not below the {len(ref.ids)} of the uncut generation")

        def no_text_past_the_cut(so_far: str, expected=expected, what=what) -> None:
            check(expected.startswith(so_far),
                  f"{what}: the stream went past the cut: {so_far!r} is not a prefix of {expected!r}")

        result = stream(client, case, what + " (stream)", on_text=no_text_past_the_cut, temperature=0, stop=stop)
        check_stream(case, result, ref, what + " (stream)", expected, expected_finish)
        check_eq(result.usage.completion_tokens, response.usage.completion_tokens,
                 f"{what}: completion_tokens streamed vs not")
    c.check_all_pages_free()
    c.check_all_alive()


# -- d. seed ---------------------------------------------------------------------------------------

def test_seed(t: ClusterTest) -> None:
    case = Case("Pick a word at random", chat=True, max_tokens=32)
    others = [Case(f"Other request {i} about the {WORDS[i]}", chat=(i % 2 == 1), max_tokens=300) for i in range(8)]
    # References: the engine's greedy text, and its own seeded sampling (the sampler's draw is
    # keyed by (seed, token index), so the cluster's should match it).
    c, greedy_ref, seeded_ref = run_parallel([
        lambda: t.start_cluster(gateway={"max-running-per-backend": 16}),
        lambda: reference(t, case),
        lambda: reference(t, case, temperature=0.9, seed=1234)])
    client = make_client(c)

    alone = create(client, case, temperature=0.9, seed=1234)
    alone_text = result_text(case, alone)
    again = create(client, case, temperature=0.9, seed=1234)
    check_text(result_text(case, again), alone_text, "seed 1234 a second time, alone", "the first time's")
    other_seed = result_text(case, create(client, case, temperature=0.9, seed=4321))
    check(other_seed != alone_text, "seed 4321 gave the same text as seed 1234: is the seed used at all?")
    check(alone_text != greedy_ref.text, "temperature 0.9 gave the greedy text")

    # 8 other requests streaming; once each has produced text, the seeded one again.
    started = [threading.Event() for _ in others]
    finished_at: list[float | None] = [None] * len(others)
    errors: list[BaseException | None] = [None] * len(others)

    def other(i: int) -> None:
        try:
            stream(client, others[i], f"other {i}", temperature=0.9, seed=i + 1,
                   on_text=lambda _text, i=i: started[i].set())
            finished_at[i] = time.monotonic()
        except BaseException as e:
            errors[i] = e
            started[i].set()

    threads = [threading.Thread(target=other, args=(i,), daemon=True) for i in range(len(others))]
    for th in threads:
        th.start()
    deadline = time.monotonic() + 60
    for i, event in enumerate(started):
        check(event.wait(max(0.0, deadline - time.monotonic())), f"other request {i} produced no text in 60 s")
    submitted_at = time.monotonic()
    busy = create(client, case, temperature=0.9, seed=1234)
    for th in threads:
        th.join(timeout=max(1.0, deadline + 60 - time.monotonic()))
    check(not any(th.is_alive() for th in threads), "other requests still running after 120 s")
    for i, e in enumerate(errors):
        if e is not None:
            raise TestFailure(f"other request {i} failed: {e!r}") from e
    running_then = sum(1 for f in finished_at if f is not None and f > submitted_at)
    log(f"seeded request sent while {running_then} of {len(others)} other requests were still streaming")
    check(running_then == len(others), f"only {running_then} of {len(others)} other requests were still "
          "running when the seeded request was sent")
    check_text(result_text(case, busy), alone_text, "seed 1234 while 8 other requests run", "the text alone")
    check_eq(busy.usage.completion_tokens, alone.usage.completion_tokens, "seed 1234: completion_tokens")
    check_eq(alone.choices[0].finish_reason, seeded_ref.finish_reason, "seed 1234: finish_reason vs the engine")
    check_text(alone_text, seeded_ref.text, "seed 1234 vs the engine's `--temperature 0.9 --seed 1234`")
    c.check_all_pages_free()
    c.check_all_alive()


# -- e. bad input ----------------------------------------------------------------------------------

BODY_DEADLINE_MS = 1500
MAX_BODY_BYTES = 262144


def check_error_body(what: str, status: int, headers: dict, body: bytes, expected_status: int,
                     param=..., code=..., type_=...) -> dict:
    text = body.decode(errors="replace")
    check_eq(status, expected_status, f"{what}: status (body {text[:300]!r})")
    check(headers.get("content-type", "").startswith("application/json"), f"{what}: content-type {headers}")
    try:
        doc = json.loads(body)
    except ValueError:
        raise TestFailure(f"{what}: error body is not JSON: {text[:300]!r}")
    check(isinstance(doc, dict) and list(doc) == ["error"], f"{what}: body is not {{\"error\": ...}}: {text}")
    error = doc["error"]
    check(isinstance(error, dict) and sorted(error) == ["code", "message", "param", "type"],
          f"{what}: error keys {sorted(error) if isinstance(error, dict) else error}")
    check(isinstance(error["message"], str) and error["message"], f"{what}: message {error['message']!r}")
    check(isinstance(error["type"], str) and error["type"], f"{what}: type {error['type']!r}")
    check(error["param"] is None or isinstance(error["param"], str), f"{what}: param {error['param']!r}")
    check(error["code"] is None or isinstance(error["code"], str), f"{what}: code {error['code']!r}")
    if param is not ...:
        if callable(param):
            check(param(error["param"]), f"{what}: param {error['param']!r}")
        else:
            check_eq(error["param"], param, f"{what}: param")
    if code is not ...:
        check_eq(error["code"], code, f"{what}: code")
    if type_ is not ...:
        check_eq(error["type"], type_, f"{what}: type")
    check("x-request-id" in headers, f"{what}: no X-Request-Id")
    return error


def read_response(sock: socket.socket, timeout_s: float) -> tuple[int, dict, bytes]:
    """Reads one HTTP/1.1 response with a Content-Length body → (status, headers, body)."""
    deadline = time.monotonic() + timeout_s
    data = b""

    def more() -> bool:
        nonlocal data
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        sock.settimeout(left)
        try:
            piece = sock.recv(65536)
        except socket.timeout:
            return False
        data += piece
        return bool(piece)

    while b"\r\n\r\n" not in data:
        if not more():
            raise TestFailure(f"no complete response header within {timeout_s} s: {data[:300]!r}")
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode(errors="replace").split("\r\n")
    check(lines[0].startswith("HTTP/1.1 "), f"status line {lines[0]!r}")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        if not more():
            raise TestFailure(f"response body shorter than its Content-Length {length}: {body[:300]!r}")
        body = data.partition(b"\r\n\r\n")[2]
    return status, headers, body[:length]


def send_tolerant(sock: socket.socket, data: bytes) -> None:
    """Sends what the peer takes: a server may answer (413) and close before reading it all."""
    try:
        sock.sendall(data)
    except (BrokenPipeError, ConnectionResetError):
        pass


def long_text(t: ClusterTest, min_tokens: int) -> str:
    """A text of at least min_tokens tokens: lines of a fixed sentence; tokens per line counted by
    the engine's tokenizer (one line, two lines), the total with a 25 % margin."""
    line = ("Permission is hereby granted, free of charge, to any person obtaining a copy of this "
            "software, to deal in the Software without restriction. ")
    one = t.engine.count_prompt_tokens(line, chat=False)
    two = t.engine.count_prompt_tokens(line + "\n" + line, chat=False)
    per_line = two - one
    check(per_line > 10, f"tokens per line {per_line}")
    lines = int(min_tokens * 1.25 / per_line) + 1
    return "\n".join([line] * lines)


def test_bad_input(t: ClusterTest) -> None:
    context = int(t.config["max_position_embeddings"])
    stream_case = Case("Keep streaming while the battery runs", chat=True, max_tokens=512)
    check_case = Case("Still serving?", chat=False, max_tokens=16)
    over_context = long_text(t, context)
    check(len(over_context.encode()) < MAX_BODY_BYTES - 4096, "the over-context prompt must fit the body limit")
    c, (stream_ref, check_ref) = start_with_references(
        t, [stream_case, check_case],
        {"gateway": {"body-deadline-ms": BODY_DEADLINE_MS, "max-body-bytes": MAX_BODY_BYTES,
                     "max-tokens-limit": context}})
    client = make_client(c)

    # A stream started before the battery, read on its own thread.
    stream_result: dict = {}
    stream_started = threading.Event()

    def run_stream() -> None:
        try:
            stream_result["result"] = stream(client, stream_case, "concurrent stream", temperature=0,
                                             on_text=lambda _t: stream_started.set())
        except BaseException as e:
            stream_result["error"] = e
            stream_started.set()

    stream_thread = threading.Thread(target=run_stream, daemon=True)
    stream_thread.start()
    check(stream_started.wait(60), "the concurrent stream produced no text within 60 s")

    host, port = c.gateway_host, c.gateway_port
    chat_path, comp_path = "/v1/chat/completions", "/v1/completions"
    user = [{"role": "user", "content": "hi"}]

    def body(route_fields: dict, **extra) -> bytes:
        return json.dumps({"model": MODEL_NAME, **route_fields, **extra}).encode()

    def chat(**extra) -> bytes:
        return body({"messages": user}, **extra)

    json_headers = {"Content-Type": "application/json"}
    battery = [
        # (what, path, body, expected status, param, code)
        ("malformed JSON", chat_path, b'{"model": "x", "messages": [', 400, ..., ...),
        ("JSON that is not an object", chat_path, b"[1, 2, 3]", 400, ..., ...),
        ("messages is a string", chat_path, body({"messages": "hi"}), 400, "messages", ...),
        ("message content is a number", chat_path, body({"messages": [{"role": "user", "content": 5}]}), 400,
         lambda p: p is not None and p.startswith("messages"), ...),
        ("max_tokens is a string", chat_path, chat(max_tokens="ten"), 400, "max_tokens", ...),
        ("temperature is a string", chat_path, chat(temperature="hot"), 400, "temperature", ...),
        ("stream is a string", chat_path, chat(stream="yes"), 400, "stream", ...),
        ("temperature out of range", chat_path, chat(temperature=5), 400, "temperature", ...),
        ("negative max_tokens", chat_path, chat(max_tokens=-5), 400, "max_tokens", ...),
        ("zero max_tokens", comp_path, body({"prompt": "hi"}, max_tokens=0), 400, "max_tokens", ...),
        ("huge max_tokens", chat_path, chat(max_tokens=10 ** 12), 400, ..., ...),
        ("max_tokens above max-tokens-limit", chat_path, chat(max_tokens=context + 1), 400, "max_tokens", ...),
        ("prompt + max_tokens beyond the context", comp_path, body({"prompt": "hi"}, max_tokens=context), 400,
         "prompt", "context_length_exceeded"),
        ("empty messages", chat_path, body({"messages": []}), 400, "messages", ...),
        ("no messages", chat_path, body({}), 400, "messages", ...),
        ("no prompt", comp_path, body({}), 400, "prompt", ...),
        ("chat prompt longer than the context", chat_path,
         body({"messages": [{"role": "user", "content": over_context}]}, max_tokens=16), 400, "messages",
         "context_length_exceeded"),
        ("completions prompt longer than the context", comp_path, body({"prompt": over_context}, max_tokens=16),
         400, "prompt", "context_length_exceeded"),
        ("unknown model", chat_path, json.dumps({"model": "no-such-model", "messages": user}).encode(), 404,
         ..., "model_not_found"),
        ("logprobs (not implemented)", chat_path, chat(logprobs=True), 400, "logprobs", ...),
        ("tools (not implemented)", chat_path,
         chat(tools=[{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]), 400,
         "tools", ...),
        ("n = 2 (not implemented)", chat_path, chat(n=2), 400, "n", ...),
    ]
    for what, path, payload, expected_status, param, code in battery:
        status, headers, data = http_request(host, port, "POST", path, payload, json_headers)
        error = check_error_body(what, status, headers, data, expected_status, param, code)
        if expected_status == 400:
            check_eq(error["type"], "invalid_request_error", f"{what}: type")
        log(f"ok: {what}: {status} {error['code']} param={error['param']}")

    # An oversized body: 413 (read on a raw socket, as the gateway may answer before it has read
    # the whole body and close).
    oversized = chat(user="x" * (MAX_BODY_BYTES + 1000))
    with socket.create_connection((host, port), timeout=30) as sock:
        send_tolerant(sock, f"POST {chat_path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                            f"Content-Length: {len(oversized)}\r\n\r\n".encode() + oversized)
        status, headers, data = read_response(sock, 30)
    check_error_body("oversized body", status, headers, data, 413)
    log(f"ok: oversized body ({len(oversized)} bytes, limit {MAX_BODY_BYTES}): 413")

    status, headers, data = http_request(host, port, "GET", chat_path)
    check_error_body("GET on a POST route", status, headers, data, 405)
    status, headers, data = http_request(host, port, "POST", "/v1/no-such-route", chat(), json_headers)
    check_error_body("unknown route", status, headers, data, 404)

    # The official client maps the same errors to its exception classes.
    try:
        client.chat.completions.create(model="no-such-model", messages=user, max_tokens=4)
        raise TestFailure("unknown model through the openai client: no error")
    except openai.NotFoundError as e:
        check_eq(e.status_code, 404, "openai client: unknown model status")
        check_eq(e.code, "model_not_found", "openai client: unknown model code")
    try:
        client.chat.completions.create(model=MODEL_NAME, messages=user, max_tokens=4, logprobs=True)
        raise TestFailure("logprobs through the openai client: no error")
    except openai.BadRequestError as e:
        check_eq(e.param, "logprobs", "openai client: logprobs param")

    # A body that never finishes: 408 once the body deadline passes.
    declared = b'{"model": "' + MODEL_NAME.encode() + b'", "messages": [{"role": "user", "content": "'
    slack_s = 5.0
    with socket.create_connection((host, port), timeout=30) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 1000\r\n\r\n" + declared)
        sent_at = time.monotonic()
        status, headers, data = read_response(sock, BODY_DEADLINE_MS / 1000 + slack_s)
        waited = time.monotonic() - sent_at
    check_error_body("incomplete body", status, headers, data, 408)
    check(waited >= BODY_DEADLINE_MS / 1000 * 0.9,
          f"incomplete body: 408 after {waited:.2f} s, before the body deadline of {BODY_DEADLINE_MS} ms")
    log(f"ok: incomplete body: 408 after {waited:.2f} s (deadline {BODY_DEADLINE_MS} ms)")

    log(f"battery done; the concurrent stream {'is still running' if stream_thread.is_alive() else 'has ended'}")
    stream_thread.join(timeout=120)
    check(not stream_thread.is_alive(), "the concurrent stream did not end within 120 s of the battery")
    if "error" in stream_result:
        raise TestFailure(f"the concurrent stream failed: {stream_result['error']!r}") from stream_result["error"]
    check_stream(stream_case, stream_result["result"], stream_ref, "the stream running during the battery")

    status, _, _ = http_request(host, port, "GET", "/health")
    check_eq(status, 200, "GET /health after the battery")
    check_response(check_case, create(client, check_case, temperature=0), check_ref, "a request after the battery")
    c.check_all_alive()
    c.check_all_pages_free()


# -- f. client disconnect while queued, in prefill and in decode -----------------------------------

class RawStream:
    """A streaming request on its own socket, so the test decides when the client goes away."""

    def __init__(self, c: Cluster, path: str, payload: dict):
        data = json.dumps(payload).encode()
        self.sock = socket.create_connection((c.gateway_host, c.gateway_port), timeout=30)
        self.sock.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                          f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
        self.received = b""

    def has_data(self) -> bool:
        readable, _, _ = select.select([self.sock], [], [], 0)
        return bool(readable)

    def read_until(self, predicate, timeout_s: float, what: str) -> bytes:
        deadline = time.monotonic() + timeout_s
        while not predicate(self.received):
            left = deadline - time.monotonic()
            check(left > 0, f"{what}: not within {timeout_s} s; received {self.received[-300:]!r}")
            self.sock.settimeout(left)
            piece = self.sock.recv(65536)
            check(bool(piece), f"{what}: the connection closed; received {self.received[-300:]!r}")
            self.received += piece
        return self.received

    def content_events(self) -> int:
        return self.received.count(b'"content":"')

    def close(self) -> None:
        self.sock.close()


def test_disconnect(t: ClusterTest) -> None:
    kv_pages = 512
    prompt_lines = ("Permission is hereby granted, free of charge, to any person obtaining a copy. \n" * 60)
    c = t.start_cluster(overrides={"max_batch": 1, "kv_pages": kv_pages, "prefill_chunk": 16},
                        gateway={"max-running-per-backend": 8})
    check_ref_case = Case("After the disconnects", chat=True, max_tokens=16)
    check_ref = reference(t, check_ref_case)
    coordinator = c.by_role("coordinator")[0]
    gateway = c.by_role("gateway")[0]

    def coord() -> dict[str, float]:
        return c.metrics(coordinator)

    def cancelled() -> float:  # requests the coordinator ended as cancelled
        return coord().get('longcat_requests_total{outcome="cancelled"}', 0.0)

    chat_path = "/v1/chat/completions"

    def chat_payload(content: str, max_tokens: int) -> dict:
        return {"model": MODEL_NAME, "messages": [{"role": "user", "content": content}],
                "max_tokens": max_tokens, "temperature": 0, "stream": True}

    # A: decoding (holds the one batch slot).
    a = RawStream(c, chat_path, chat_payload("A long story, please", 4000))
    a.read_until(lambda r: r.count(b'"content":"') >= 3, 60, "request A's first tokens")
    m = coord()
    check_eq(m.get("longcat_running_requests"), 1.0, "running requests while A decodes")

    # B: queued behind A (max_batch 1), then its client goes away.
    b = RawStream(c, chat_path, chat_payload("B waits in the queue", 16))
    poll(lambda: coord().get("longcat_queue_depth") == 1.0, 30, "request B to be queued at the coordinator")
    check(not b.has_data(), "request B got a response while queued")
    b.close()
    poll(lambda: coord().get("longcat_queue_depth") == 0.0, 30, "the queue to empty after B's client left")
    poll(lambda: cancelled() == 1.0, 30, "the coordinator to count B as cancelled")
    events_before = a.content_events()
    a.read_until(lambda r: r.count(b'"content":"') >= events_before + 3, 30, "request A going on after B left")
    check_eq(coord().get("longcat_running_requests"), 1.0, "running requests after B left (A still runs)")
    log("ok: B disconnected while queued; A still decoding")

    # A's client goes away while it decodes.
    check(b"[DONE]" not in a.received, "request A finished before the test closed it")
    a.close()
    c.check_all_pages_free()
    check_eq(cancelled(), 2.0, "requests cancelled at the coordinator after A's client left")
    log("ok: A disconnected while decoding; every page free")

    # C: a long prompt prefilled 16 tokens a step; its client goes away before the first token.
    cc = RawStream(c, "/v1/completions", {"model": MODEL_NAME, "prompt": prompt_lines, "max_tokens": 64,
                                          "temperature": 0, "stream": True})
    poll(lambda: coord().get("longcat_running_requests") == 1.0, 30, "request C to run (prefill)", 0.01)
    check(not cc.has_data(), "request C already answered when the test meant to close it in prefill "
                             "(prefill too short)")
    kv_used = [c.metrics(w).get("longcat_kv_pages_free") for w in c.by_role("attention")]
    cc.close()
    log(f"C disconnected in prefill (workers' free pages then: {kv_used})")
    c.check_all_pages_free()
    check_eq(cancelled(), 3.0, "requests cancelled at the coordinator after C's client left")
    log("ok: C disconnected in prefill; every page free")

    g = c.metrics(gateway)
    disconnects = sum(v for k, v in g.items() if k.startswith("longcat_gateway_requests_total{")
                      and 'outcome="disconnect"' in k)
    check_eq(disconnects, 3.0, "gateway requests counted as client disconnects")
    check_eq(g.get("longcat_gateway_requests_in_flight"), 0.0, "gateway requests in flight")
    check_eq(g.get("longcat_router_running_requests"), 0.0, "gateway router running requests")
    check_eq(g.get("longcat_router_queue_depth"), 0.0, "gateway router queue depth")

    client = make_client(c)
    check_response(check_ref_case, create(client, check_ref_case, temperature=0), check_ref,
                   "a request after the disconnects")
    c.check_all_pages_free()
    c.check_all_alive()


# -- g. overload: 200 requests against a queue bound of 64 -----------------------------------------

def test_overload(t: ClusterTest) -> None:
    n, queue_bound, running = 200, 64, 8
    cases = [Case(f"Overload prompt {i} about the {WORDS[i]}", chat=(i % 2 == 0), max_tokens=48) for i in range(4)]
    c, refs = start_with_references(t, cases, {"gateway": {"queue-bound": queue_bound,
                                                           "max-running-per-backend": running}})
    client = make_client(c, max_connections=n + 8)
    barrier = threading.Barrier(n, timeout=60)
    outcomes: list[tuple | None] = [None] * n

    def one(i: int) -> None:
        case = cases[i % len(cases)]
        try:
            barrier.wait()
            outcomes[i] = ("ok", create(client, case, temperature=0))
        except openai.RateLimitError as e:
            outcomes[i] = ("429", e)
        except BaseException as e:
            outcomes[i] = ("error", e)

    t0 = time.monotonic()
    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=max(1.0, 180 - (time.monotonic() - t0)))
    check(not any(th.is_alive() for th in threads), "requests still running after 180 s")
    ok = limited = 0
    for i, outcome in enumerate(outcomes):
        kind, value = outcome
        case, ref = cases[i % len(cases)], refs[i % len(cases)]
        if kind == "ok":
            ok += 1
            check_response(case, value, ref, f"request {i} ({describe(case)})")
        elif kind == "429":
            limited += 1
            response = value.response
            retry_after = response.headers.get("retry-after")
            check(retry_after is not None and retry_after.isdigit() and int(retry_after) >= 1,
                  f"request {i}: 429 with Retry-After {retry_after!r}")
            check_error_body(f"request {i} (429)", response.status_code, dict(response.headers),
                             response.content, 429, code="rate_limit_exceeded")
        else:
            raise TestFailure(f"request {i}: neither a result nor a 429: {value!r}") from value
    log(f"{n} requests in {time.monotonic() - t0:.1f} s: {ok} succeeded, {limited} got 429")
    check(limited > 0, f"no request got 429 ({ok} succeeded)")
    # A 429 means `running + queue_bound` requests were in the gateway at that moment, and each
    # of those succeeded: at least that many results.
    check(ok >= running + queue_bound, f"only {ok} requests succeeded; a 429 should only come with "
                                       f"{running + queue_bound} accepted requests in the gateway")
    c.check_all_alive()
    c.check_all_pages_free()
    g = c.metrics(c.by_role("gateway")[0])
    check_eq(g.get("longcat_router_queue_depth"), 0.0, "gateway router queue depth afterwards")
    check_eq(g.get("longcat_router_running_requests"), 0.0, "gateway router running requests afterwards")


TESTS = {
    "chat_and_completions": test_chat_and_completions,
    "concurrent_streams": test_concurrent_streams,
    "stop_strings": test_stop_strings,
    "seed": test_seed,
    "bad_input": test_bad_input,
    "disconnect": test_disconnect,
    "overload": test_overload,
}

# Each test's own deadline (seconds); ctest's TIMEOUT is set above it (tests/CMakeLists.txt), so
# the test stops its cluster and prints the logs itself before ctest would kill it.
DEADLINES = {name: 240.0 for name in TESTS}

if __name__ == "__main__":
    sys.exit(main(TESTS, DEADLINES))
