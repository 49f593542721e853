#!/usr/bin/env python3
"""Load benchmark of the chat gateway (see README.md).

Scenarios, against a server that bench/run.sh started on 127.0.0.1 (the
single-machine gateway, or the local cluster behind HAProxy):
  baseline  one pair at a low rate, plus ping round trips (unloaded latency)
  idle      N idle WebSocket connections; server RSS per connection (single only)
  pairs     N users in N/2 pairs, each sending to its peer at a fixed
            open-loop rate; throughput, latency, exactly-once delivery

Client processes run on the same (2-core) machine as the server, so they
compete with it for CPU; the CPU used by each side is reported, per server
process (--proc NAME=PID, repeatable; the cluster has five).

--compare SINGLE.json CLUSTER.json prints two runs side by side and writes
both, with the ratios cluster/single, into --out (run.sh --target both).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import math
import multiprocessing as mp
import os
import platform
import random
import resource
import subprocess
import sys
import time
import urllib.request
from collections import Counter

import jwt
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

# --------------------------------------------------------------------------
# helpers


def mint(secret: str, user: str) -> str:
    """An HS256 token for `user`, valid for an hour."""
    return jwt.encode({"sub": user, "exp": int(time.time()) + 3600}, secret, algorithm="HS256")


async def open_ws(url: str, secret: str, user: str, *, source: str | None = None,
                  ping_interval: float | None = 20):
    kwargs = {"local_addr": (source, 0)} if source else {}
    return await connect(
        url,
        additional_headers={"Authorization": "Bearer " + mint(secret, user)},
        compression=None,
        proxy=None,  # never route through an HTTP proxy from the environment
        open_timeout=15,
        close_timeout=5,
        ping_interval=ping_interval,
        **kwargs,
    )


def pct(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile, or None for no values."""
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, max(0, math.ceil(p / 100 * len(s)) - 1))]


def ms(x: float | None) -> float | None:
    return None if x is None else round(x * 1000, 2)


def lat_summary(values: list[float]) -> dict:
    return {"n": len(values), "p50_ms": ms(pct(values, 50)), "p99_ms": ms(pct(values, 99)),
            "max_ms": ms(max(values) if values else None),
            "mean_ms": ms(sum(values) / len(values) if values else None)}


def vmrss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def cpu_secs(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def http_base(ws_url: str) -> str:
    """ws://127.0.0.1:PORT/v1/ws -> http://127.0.0.1:PORT"""
    return ws_url.replace("ws://", "http://", 1).split("/v1/", 1)[0]


def server_metrics(base: str) -> dict[str, float]:
    """A gateway's Prometheus samples (base = http://HOST:PORT), summed over labels (empty if
    unreachable)."""
    url = base.rstrip("/") + "/metrics"
    try:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        text = opener.open(url, timeout=5).read().decode()
    except OSError:
        return {}
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            name = name.split("{", 1)[0]
            with contextlib.suppress(ValueError):
                out[name] = out.get(name, 0.0) + float(value)
    return out


def exe_id(pid: int) -> dict:
    """The binary a process runs (what /proc/PID/exe points to, even if since rebuilt) and its sha256."""
    h = hashlib.sha256()
    try:
        with open(f"/proc/{pid}/exe", "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        return {"exe": os.readlink(f"/proc/{pid}/exe"), "sha256": h.hexdigest()[:16]}
    except OSError as err:
        return {"exe": None, "sha256": None, "error": str(err)}


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def raise_nofile() -> int:
    """Raises this process's soft open-file limit to the hard one; returns it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def self_cpu() -> float:
    t = os.times()
    return t.user + t.system


async def wait_for_value(value, timeout: float) -> float:
    """Polls a shared mp.Value until it is non-zero (bounded)."""
    deadline = time.monotonic() + timeout
    while value.value == 0:
        if time.monotonic() > deadline:
            raise TimeoutError("the coordinator never said go")
        await asyncio.sleep(0.02)
    return value.value


# --------------------------------------------------------------------------
# pairs: one worker drives a slice of the pairs on its own event loop


class User:
    def __init__(self, name: str, peer: str):
        self.name, self.peer = name, peer
        self.ws = None
        self.rid = 0
        self.last_seq = 0     # sync key: highest inbox seq processed
        self.head = 0         # highest head heard (notify or sync_result)
        self.syncing = False  # one sync in flight at a time; notifies coalesce
        self.closing = False
        self.verify = 0       # final check: 1 wanted, 2 sent, 3 caught up
        self.pending: dict[int, tuple[str, float, str]] = {}  # rid -> (client_msg_id, sent at, frame)
        self.acked: set[str] = set()
        self.seen: Counter = Counter()  # (from, client_msg_id) -> times in my inbox


class Stats:
    def __init__(self, w0: float = 0.0, w1: float = 0.0):
        self.w0, self.w1 = w0, w1  # measurement window (wall clock)
        self.ack_lat: list[float] = []
        self.deliv_lat: list[float] = []
        self.lag: list[float] = []  # how late the open-loop sender was
        self.ramp_ack_lat: list[float] = []  # sends before the window (first message of each pair)
        self.c: Counter = Counter()

    def in_window(self, t: float) -> bool:
        return self.w0 <= t < self.w1


async def maybe_sync(u: User, force: bool = False) -> None:
    if u.syncing or u.closing or (u.head <= u.last_seq and not force):
        return
    u.syncing = True
    if u.verify == 1:
        u.verify = 2
    try:
        await u.ws.send(json.dumps({"type": "sync", "rid": "s", "since": u.last_seq, "limit": 500}))
    except ConnectionClosed:
        u.syncing = False  # the session loop reconnects and syncs


def on_sync_result(u: User, f: dict, st: Stats, now: float) -> None:
    u.syncing = False
    new = 0
    for e in f.get("entries", []):
        if e["seq"] <= u.last_seq:
            st.c["stale_entries"] += 1  # at or below our sync key: must never happen
            continue
        new += 1
        u.last_seq = e["seq"]
        key = (e["from"], e["client_msg_id"])
        u.seen[key] += 1
        if u.seen[key] > 1:
            continue
        if e["from"] == u.name:
            st.c["own_unique"] += 1
        if e["from"] != u.peer:
            continue
        st.c["peer_unique"] += 1
        sent = float(e["body"].split(" ", 1)[0])
        if st.in_window(now):
            st.c["delivered_in_window"] += 1
        if st.in_window(sent):
            st.deliv_lat.append(now - sent)
    u.head = max(u.head, f.get("head", 0))
    if u.verify == 1:  # this sync was sent before the final check began: one more
        asyncio.ensure_future(maybe_sync(u, force=True))
        return
    if u.verify == 2 and not f.get("more") and u.head <= u.last_seq:
        u.verify = 3
    if f.get("more") or u.head > u.last_seq:
        if new:
            asyncio.ensure_future(maybe_sync(u))
        else:  # head ahead of what is visible yet: retry shortly, not in a hot loop
            st.c["empty_resyncs"] += 1
            asyncio.get_running_loop().call_later(0.005, lambda: asyncio.ensure_future(maybe_sync(u)))


async def read_frames(u: User, st: Stats) -> None:
    """Handles one connection's frames until it closes."""
    try:
        async for raw in u.ws:
            now = time.time()
            f = json.loads(raw)
            kind = f.get("type")
            if kind == "ack":
                p = u.pending.pop(f.get("rid"), None)
                if p is None:
                    st.c["unexpected_acks"] += 1
                    continue
                cmid, sent, _ = p
                u.acked.add(cmid)
                st.c["acked"] += 1
                if st.in_window(sent):
                    st.ack_lat.append(now - sent)
                elif sent < st.w0:
                    st.ramp_ack_lat.append(now - sent)
            elif kind == "notify":
                st.c["notifies"] += 1
                u.head = max(u.head, f["head"])
                await maybe_sync(u)
            elif kind == "sync_result":
                st.c["syncs"] += 1
                on_sync_result(u, f, st, now)
            elif kind == "error":
                st.c["error_" + str(f.get("code"))] += 1
                if f.get("rid") == "s":
                    u.syncing = False
                else:
                    u.pending.pop(f.get("rid"), None)  # not stored (e.g. rate_limited): given up
            else:
                st.c["frame_" + str(kind)] += 1
    except ConnectionClosed:
        pass


async def session(u: User, st: Stats, cfg: dict) -> None:
    """Reads frames; when the server closes the socket, reconnects (bounded), resends what was
    not acked with the same client_msg_id (an idempotent retry) and syncs from the sync key."""
    for attempt in range(6):
        await read_frames(u, st)
        if u.closing:
            return
        st.c[f"closed_by_server_code_{u.ws.close_code}"] += 1
        u.syncing = False
        if u.verify == 2:
            u.verify = 1
        await asyncio.sleep(0.2 * 2 ** attempt * random.uniform(0.5, 1.5))
        if u.closing:
            return
        try:
            u.ws = await open_ws(cfg["url"], cfg["secret"], u.name)
        except Exception:  # noqa: BLE001 - counted; the next round tries again
            st.c["reconnect_failed"] += 1
            continue
        st.c["reconnects"] += 1
        try:
            for _, _, frame in list(u.pending.values()):
                await u.ws.send(frame)
            await maybe_sync(u, force=True)
        except ConnectionClosed:
            continue
    st.c["gave_up_reconnecting"] += 1


async def sender(u: User, st: Stats, start: float, stop: float, rate: float, pad: str) -> None:
    interval, t, k = 1.0 / rate, start, 0
    while t < stop:
        now = time.time()
        if t > now:
            await asyncio.sleep(t - now)
            now = time.time()
        if st.in_window(now):
            st.lag.append(now - t)
            st.c["sent_in_window"] += 1
        k += 1
        u.rid += 1
        cmid = f"{u.name}-{k}"
        frame = json.dumps({"type": "send", "rid": u.rid, "client_msg_id": cmid, "to": u.peer,
                            "body": f"{now:.6f} {pad}"})
        u.pending[u.rid] = (cmid, now, frame)
        st.c["sent"] += 1
        ws = u.ws
        try:
            await ws.send(frame)
        except ConnectionClosed:
            st.c["send_on_closed_socket"] += 1
            if u.ws is not ws:  # already reconnected (and resent before this one was pending)
                with contextlib.suppress(ConnectionClosed):
                    await u.ws.send(frame)
            # else: still pending; the session resends it after reconnecting
        t += interval


async def pairs_async(cfg: dict, first_pair: int, n_pairs: int, go) -> dict:
    """Connects 2*n_pairs users, waits for `go()` (-> start time), runs, verifies."""
    raise_nofile()
    users: list[User] = []
    for p in range(first_pair, first_pair + n_pairs):
        a, b = f"{cfg['prefix']}{2 * p:05d}", f"{cfg['prefix']}{2 * p + 1:05d}"
        users += [User(a, b), User(b, a)]
    st = Stats()
    sem = asyncio.Semaphore(32)
    t_conn = time.time()

    async def connect_one(u: User) -> None:
        async with sem:
            try:
                u.ws = await open_ws(cfg["url"], cfg["secret"], u.name)
            except Exception as err:  # noqa: BLE001 - counted and reported
                st.c["connect_failed"] += 1
                st.c["connect_error_" + type(err).__name__] += 1

    await asyncio.gather(*(connect_one(u) for u in users))
    connect_secs = time.time() - t_conn
    users = [u for u in users if u.ws is not None]
    sessions = [asyncio.create_task(session(u, st, cfg)) for u in users]

    t0 = await go(len(users))
    ramp, dur = cfg["ramp"], cfg["duration"]
    st.w0, st.w1 = t0 + ramp, t0 + ramp + dur
    pad = "x" * max(0, cfg["body_bytes"] - 18)
    cpu0 = self_cpu()
    connected = {u.name for u in users}
    senders = [sender(u, st, t0 + random.uniform(0, ramp), st.w1, cfg["rate"], pad)
               for u in users if u.peer in connected]
    await asyncio.gather(*senders)
    cpu1 = self_cpu()

    # Drain: wait (bounded) until every send is acked and every acked message reached both inboxes.
    drain_end = time.time() + cfg["drain"]
    while time.time() < drain_end:
        if (not any(u.pending for u in users)
                and st.c["peer_unique"] >= st.c["acked"] and st.c["own_unique"] >= st.c["acked"]):
            break
        await asyncio.sleep(0.1)
    drained_secs = time.time() - st.w1

    # Verification: the acks received so far, then one more sync per user, sent after them.
    # An acked message is in both inboxes, so that sync (followed while `more`) must return it.
    acked = {u.name: set(u.acked) for u in users}
    for u in users:
        u.verify = 1
        await maybe_sync(u, force=True)  # if a sync is in flight, its result sends this one
    verify_end = time.time() + cfg["drain"]
    while time.time() < verify_end and any(u.verify != 3 for u in users):
        await asyncio.sleep(0.1)
    v = Counter()
    v["users_not_caught_up"] = sum(u.verify != 3 for u in users)

    # Exactly-once check: every acked message once in the peer's inbox and once in the sender's.
    by_name = {u.name: u for u in users}
    for u in users:
        peer = by_name.get(u.peer)
        if peer is None:
            continue
        for cmid in acked[u.name]:
            n_peer, n_own = peer.seen[(u.name, cmid)], u.seen[(u.name, cmid)]
            v["lost"] += n_peer == 0
            v["duplicated"] += max(0, n_peer - 1)
            v["own_inbox_lost"] += n_own == 0
            v["own_inbox_duplicated"] += max(0, n_own - 1)
        for (frm, cmid), n in peer.seen.items():
            if frm == u.name and cmid not in u.acked:
                v["delivered_without_ack"] += 1
        v["unacked_at_end"] += len(u.pending)

    for u in users:
        u.closing = True
    await asyncio.gather(*(u.ws.close() for u in users), return_exceptions=True)
    await asyncio.gather(*sessions, return_exceptions=True)
    return {"users": len(users), "connect_secs": round(connect_secs, 2), "drain_secs": round(drained_secs, 2),
            "client_cpu_secs": round(cpu1 - cpu0, 2), "counters": dict(st.c), "verify": dict(v),
            "ack_lat": st.ack_lat, "deliv_lat": st.deliv_lat, "lag": st.lag, "ramp_ack_lat": st.ramp_ack_lat}


def pairs_worker(cfg: dict, first_pair: int, n_pairs: int, wid: int, out, start_at) -> None:
    async def go(n_connected: int) -> float:
        out.put(("ready", wid, n_connected))
        return await wait_for_value(start_at, 600)

    try:
        res = asyncio.run(pairs_async(cfg, first_pair, n_pairs, go))
        out.put(("result", wid, res))
    except BaseException as err:  # noqa: BLE001 - reported to the coordinator
        out.put(("failed", wid, repr(err)))


def merge_pairs(parts: list[dict], cfg: dict, wall: dict) -> dict:
    c, v = Counter(), Counter()
    ack, deliv, lag, ramp_ack = [], [], [], []
    for r in parts:
        c.update(r["counters"])
        v.update(r["verify"])
        ack += r["ack_lat"]
        deliv += r["deliv_lat"]
        lag += r["lag"]
        ramp_ack += r["ramp_ack_lat"]
    dur = cfg["duration"]
    return {
        "users": sum(r["users"] for r in parts),
        "offered_msgs_per_s": round(cfg["rate"] * 2 * cfg["pairs"], 1),
        "sent_msgs_per_s": round(c["sent_in_window"] / dur, 1),
        "acked_msgs_per_s": round(len(ack) / dur, 1),
        "delivered_msgs_per_s": round(c["delivered_in_window"] / dur, 1),
        "send_to_ack": lat_summary(ack),
        "send_to_delivery": lat_summary(deliv),
        "client_send_lag": lat_summary(lag),
        "ramp_send_to_ack": lat_summary(ramp_ack),
        "sent_total": c["sent"],
        "acked_total": c["acked"],
        "lost": v["lost"],
        "duplicated": v["duplicated"],
        "own_inbox_lost": v["own_inbox_lost"],
        "own_inbox_duplicated": v["own_inbox_duplicated"],
        "delivered_without_ack": v["delivered_without_ack"],
        "unacked_at_end": v["unacked_at_end"],
        "users_not_caught_up": v["users_not_caught_up"],
        "stale_entries": c["stale_entries"],
        "errors": {k: n for k, n in c.items() if k.startswith("error_")},
        "connect_failed": c["connect_failed"],
        "closed_by_server": {k[len("closed_by_server_"):]: n for k, n in c.items()
                             if k.startswith("closed_by_server_")},
        "reconnects": c["reconnects"],
        "reconnect_failed": c["reconnect_failed"],
        "notifies": c["notifies"],
        "syncs": c["syncs"],
        "drain_secs_max": max((r["drain_secs"] for r in parts), default=None),
        "client_cpu_secs": round(sum(r["client_cpu_secs"] for r in parts), 2),
        **wall,
    }


def send_stats(d: dict[str, float], secs: float) -> dict:
    """Sends per second and mean send duration from a /metrics delta."""
    n = d.get("chat_send_duration_seconds_count", 0.0)
    return {"sends_per_s": round(n / secs, 1),
            "mean_send_ms": round(1000 * d.get("chat_send_duration_seconds_sum", 0.0) / n, 2) if n else None}


def run_pairs(a) -> dict:
    cfg = {"url": a.url, "secret": a.secret, "prefix": "pu", "rate": a.rate, "duration": a.duration,
           "ramp": a.ramp, "drain": a.drain, "body_bytes": a.body_bytes, "pairs": a.pairs}
    ctx = mp.get_context("spawn")
    out, start_at = ctx.Queue(), ctx.Value("d", 0.0)
    nproc = max(1, min(a.pair_procs, a.pairs))
    slices = [(i * a.pairs // nproc, (i + 1) * a.pairs // nproc) for i in range(nproc)]
    procs = [ctx.Process(target=pairs_worker, args=(cfg, lo, hi - lo, i, out, start_at), daemon=True)
             for i, (lo, hi) in enumerate(slices)]
    for p in procs:
        p.start()
    try:
        connected = 0
        for _ in procs:
            kind, wid, n = out.get(timeout=300)
            if kind == "failed":
                raise RuntimeError(f"pairs worker {wid} failed: {n}")
            connected += n
        print(f"  pairs: {connected} users connected in {nproc} client processes", flush=True)
        t0 = time.time() + 1.0
        start_at.value = t0
        w0, w1 = t0 + a.ramp, t0 + a.ramp + a.duration
        time.sleep(max(0.0, w0 - time.time()))
        # Every server process's CPU (utime + stime) and every gateway's /metrics, at both ends.
        m0 = {n: server_metrics(u) for n, u in a.metrics.items()}
        cpu0, clk0 = {n: cpu_secs(p) for n, p in a.procs.items()}, time.time()
        time.sleep(max(0.0, w1 - time.time()))
        cpu1, clk1 = {n: cpu_secs(p) for n, p in a.procs.items()}, time.time()
        m1 = {n: server_metrics(u) for n, u in a.metrics.items()}
        by_proc = {n: round(100 * (cpu1[n] - cpu0[n]) / (clk1 - clk0), 1) for n in a.procs}
        rss = {n: vmrss_kib(p) for n, p in a.procs.items()}
        wall = {"server_cpu_pct_in_window": round(sum(cpu1[n] - cpu0[n] for n in a.procs) * 100 / (clk1 - clk0), 1),
                "server_cpu_pct_by_process": by_proc,
                "server_cpu_secs_in_window": round(sum(cpu1[n] - cpu0[n] for n in a.procs), 3),
                "server_rss_kib_end_of_window": sum(rss.values()),
                "server_rss_kib_by_process": rss}
        # A gateway whose /metrics did not answer at either end counts as no data, not as a delta.
        deltas = {n: {k: m1[n].get(k, 0.0) - m0[n].get(k, 0.0) for k in m1[n]} if m0[n] and m1[n] else {}
                  for n in a.metrics}
        total: Counter = Counter()
        for d in deltas.values():
            total.update(d)
        if total.get("chat_send_duration_seconds_count"):
            agg = send_stats(total, a.duration)
            wall["server_sends_per_s_in_window"] = agg["sends_per_s"]
            wall["server_mean_send_ms_in_window"] = agg["mean_send_ms"]
        wall["server_send_by_gateway"] = {n: send_stats(d, a.duration) for n, d in deltas.items()}
        wall["server_slow_client_closes_total"] = sum(m.get("chat_slow_client_closes_total", 0) for m in m1.values())
        parts = []
        deadline = time.time() + a.drain + 120
        while len(parts) < len(procs):
            kind, wid, res = out.get(timeout=max(1.0, deadline - time.time()))
            if kind == "failed":
                raise RuntimeError(f"pairs worker {wid} failed: {res}")
            parts.append(res)
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.terminate()
    res = merge_pairs(parts, cfg, wall)
    res["client_processes"] = nproc
    delivered = res["delivered_msgs_per_s"] * a.duration
    res["server_cpu_ms_per_delivered_msg"] = (round(1000 * wall["server_cpu_secs_in_window"] / delivered, 3)
                                              if delivered else None)
    res["client_cpu_pct_in_window"] = round(100 * res["client_cpu_secs"] / (a.duration + a.ramp), 1)
    return res


# --------------------------------------------------------------------------
# baseline: one pair at a low rate in this process, and ping round trips


def run_baseline(a) -> dict:
    cfg = {"url": a.url, "secret": a.secret, "prefix": "bu", "rate": 10.0, "duration": 5.0,
           "ramp": 0.5, "drain": 5.0, "body_bytes": a.body_bytes, "pairs": 1}

    async def main() -> dict:
        async def go(_n: int) -> float:
            return time.time() + 0.2

        pair = await pairs_async(cfg, 0, 1, go)
        ws = await open_ws(a.url, a.secret, "bping")
        rtts = []
        try:
            for i in range(200):
                t = time.perf_counter()
                await ws.send(json.dumps({"type": "ping", "rid": i}))
                while json.loads(await asyncio.wait_for(ws.recv(), 5)).get("rid") != i:
                    pass
                rtts.append(time.perf_counter() - t)
        finally:
            await ws.close()
        return {"pair": pair, "ping": lat_summary(rtts)}

    r = asyncio.run(main())
    p = merge_pairs([r["pair"]], cfg, {})
    return {"what": "1 pair, 10 msg/s per user for 5 s; 200 sequential pings on one socket",
            "send_to_ack": p["send_to_ack"], "send_to_delivery": p["send_to_delivery"],
            "lost": p["lost"], "duplicated": p["duplicated"], "ping_rtt": r["ping"]}


# --------------------------------------------------------------------------
# idle: many idle connections, server RSS per connection


def idle_worker(url: str, secret: str, wid: int, count: int, source: str | None, out, close_at) -> None:
    async def main() -> None:
        limit = raise_nofile()
        socks, fails = [], Counter()
        sem = asyncio.Semaphore(64)

        async def one(j: int) -> None:
            async with sem:
                try:
                    socks.append(await open_ws(url, secret, f"idle{wid}-{j:05d}", source=source,
                                               ping_interval=None))
                except Exception as err:  # noqa: BLE001 - counted and reported
                    fails[type(err).__name__ + ": " + str(err)[:80]] += 1

        t = time.time()
        await asyncio.gather(*(one(j) for j in range(count)))
        out.put(("connected", wid, {"ok": len(socks), "failed": sum(fails.values()),
                                    "failures": dict(fails.most_common(3)),
                                    "secs": round(time.time() - t, 2), "nofile": limit}))
        await wait_for_value(close_at, 600)
        sem = asyncio.Semaphore(512)

        async def close(ws) -> None:
            async with sem:
                await ws.close()

        await asyncio.gather(*(close(ws) for ws in socks), return_exceptions=True)
        out.put(("closed", wid, None))

    try:
        asyncio.run(main())
    except BaseException as err:  # noqa: BLE001 - reported to the coordinator
        out.put(("failed", wid, repr(err)))


def run_idle(a, pid: int) -> dict:
    time.sleep(1.0)
    rss_before, fds_before = vmrss_kib(pid), open_fds(pid)
    ctx = mp.get_context("spawn")
    out, close_at = ctx.Queue(), ctx.Value("d", 0.0)
    n = a.idle_procs
    counts = [a.idle_conns // n + (i < a.idle_conns % n) for i in range(n)]
    # One source address per process (127.0.0.2, .3, ...) so ephemeral ports never run short.
    sources = [f"127.0.0.{2 + i}" if a.idle_source_addrs else None for i in range(n)]
    procs = [ctx.Process(target=idle_worker, args=(a.url, a.secret, i, counts[i], sources[i], out, close_at),
                         daemon=True) for i in range(n)]
    t = time.time()
    for p in procs:
        p.start()
    workers = {}
    try:
        while len(workers) < n:
            kind, wid, info = out.get(timeout=300)
            if kind == "failed":
                raise RuntimeError(f"idle worker {wid} failed: {info}")
            workers[wid] = info
        connect_secs = time.time() - t
        ok = sum(w["ok"] for w in workers.values())
        print(f"  idle: {ok} connections open after {connect_secs:.1f} s", flush=True)
        time.sleep(2.0)  # let the server settle before reading RSS
        rss_after, fds_after = vmrss_kib(pid), open_fds(pid)
        time.sleep(max(0.0, a.idle_hold - 2.0))
        rss_end_of_hold = vmrss_kib(pid)
        close_at.value = time.time()
        closed = 0
        while closed < n:
            kind, wid, info = out.get(timeout=120)
            if kind == "failed":
                raise RuntimeError(f"idle worker {wid} failed: {info}")
            closed += kind == "closed"
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.terminate()
    time.sleep(1.0)
    rss_closed = vmrss_kib(pid)
    return {
        "connections": ok,
        "connect_failed": sum(w["failed"] for w in workers.values()),
        "connect_failures": [w["failures"] for w in workers.values() if w["failures"]],
        "client_processes": n,
        "source_addrs": [s or "default" for s in sources],
        "connect_secs": round(connect_secs, 2),
        "server_fds_before": fds_before,
        "server_fds_after": fds_after,
        "rss_before_kib": rss_before,
        "rss_after_kib": rss_after,
        "rss_end_of_hold_kib": rss_end_of_hold,
        "rss_after_close_kib": rss_closed,
        "kib_per_idle_connection": round((rss_after - rss_before) / ok, 2) if ok else None,
    }


# --------------------------------------------------------------------------
# report


def machine() -> dict:
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "")
    except OSError:
        pass
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=os.path.dirname(os.path.abspath(__file__)), timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return {"cores": os.cpu_count(), "cpu": model, "kernel": platform.release(),
            "python": platform.python_version(), "git_commit": commit,
            "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
            "note": "server and client processes share these cores; the Python clients compete with "
                    "the server for CPU, so the figures are a lower bound for the server"}


def fmt(x) -> str:
    return "-" if x is None else str(x)


def print_report(r: dict) -> None:
    m = r["machine"]
    print()
    print(f"== results: {r.get('target', 'single')} ({m['cores']} cores, {m['cpu']}; clients share the cores"
          f" with the server; load average at start {m['loadavg_at_start']}) ==")
    if "baseline" in r:
        b = r["baseline"]
        print(f"baseline   ping rtt p50/p99 {fmt(b['ping_rtt']['p50_ms'])}/{fmt(b['ping_rtt']['p99_ms'])} ms;"
              f" send->ack p50/p99 {fmt(b['send_to_ack']['p50_ms'])}/{fmt(b['send_to_ack']['p99_ms'])} ms;"
              f" send->delivery p50/p99 {fmt(b['send_to_delivery']['p50_ms'])}/"
              f"{fmt(b['send_to_delivery']['p99_ms'])} ms; lost {b['lost']} dup {b['duplicated']}")
    if "idle" in r:
        i = r["idle"]
        print(f"idle       {i['connections']} connections ({i['connect_failed']} failed) in "
              f"{i['client_processes']} processes; server RSS {i['rss_before_kib']} -> {i['rss_after_kib']} KiB"
              f" => {fmt(i['kib_per_idle_connection'])} KiB per idle connection"
              f" (after close: {i['rss_after_close_kib']} KiB)")
    if "pairs" in r:
        p = r["pairs"]
        print(f"pairs      {p['users']} users, {p['client_processes']} client processes, offered "
              f"{p['offered_msgs_per_s']} msg/s for {r['params']['duration']} s")
        print(f"           sent {p['sent_msgs_per_s']}/s, acked {p['acked_msgs_per_s']}/s, "
              f"delivered {p['delivered_msgs_per_s']} msg/s")
        print(f"           send->ack p50/p99 {fmt(p['send_to_ack']['p50_ms'])}/{fmt(p['send_to_ack']['p99_ms'])} ms;"
              f" send->delivery p50/p99 {fmt(p['send_to_delivery']['p50_ms'])}/"
              f"{fmt(p['send_to_delivery']['p99_ms'])} ms (max {fmt(p['send_to_delivery']['max_ms'])})")
        print(f"           exactly-once: acked {p['acked_total']}, lost {p['lost']}, duplicated {p['duplicated']}"
              f" (sender's own inbox: lost {p['own_inbox_lost']}, dup {p['own_inbox_duplicated']});"
              f" unacked {p['unacked_at_end']}; users not caught up {p['users_not_caught_up']};"
              f" errors {p['errors'] or 'none'}; closed by server {p['closed_by_server'] or 'none'},"
              f" reconnects {p['reconnects']}")
        if "server_mean_send_ms_in_window" in p:
            gws = p.get("server_send_by_gateway", {})
            per_gw = "; ".join(f"{n} {fmt(g['mean_send_ms'])} ms at {g['sends_per_s']}/s" for n, g in gws.items())
            print(f"           server side: {p['server_sends_per_s_in_window']} sends/s, mean send handling"
                  f" {p['server_mean_send_ms_in_window']} ms (chat_send_duration_seconds"
                  f"{': ' + per_gw if len(gws) > 1 else ''}); client send->ack mean"
                  f" {fmt(p['send_to_ack']['mean_ms'])} ms")
        by_proc = p.get("server_cpu_pct_by_process", {})
        split = f" ({', '.join(f'{n} {v}%' for n, v in by_proc.items())})" if len(by_proc) > 1 else ""
        print(f"           CPU in window: server {p['server_cpu_pct_in_window']}%{split}, clients "
              f"{p['client_cpu_pct_in_window']}% (of one core; 200% = whole machine);"
              f" server CPU {fmt(p.get('server_cpu_ms_per_delivered_msg'))} ms per delivered msg;"
              f" client send lag p99 {fmt(p['client_send_lag']['p99_ms'])} ms")


# --------------------------------------------------------------------------
# single vs cluster (run.sh --target both)


def ratio(x, y):
    """x / y, or None when either is missing or y is 0."""
    if x is None or y is None or y == 0:
        return None
    return round(x / y, 2)


def comparison(single: dict, cluster: dict) -> dict:
    """The headline figures of both runs and their ratio cluster/single."""
    def get(r: dict, *path):
        for k in path:
            if not isinstance(r, dict) or k not in r:
                return None
            r = r[k]
        return r

    rows = [("delivered msg/s", ("pairs", "delivered_msgs_per_s")),
            ("send->delivery p50 ms", ("pairs", "send_to_delivery", "p50_ms")),
            ("send->delivery p99 ms", ("pairs", "send_to_delivery", "p99_ms")),
            ("send->ack p50 ms", ("pairs", "send_to_ack", "p50_ms")),
            ("send->ack p99 ms", ("pairs", "send_to_ack", "p99_ms")),
            ("send->ack mean ms (client)", ("pairs", "send_to_ack", "mean_ms")),
            ("send mean ms (gateway /metrics)", ("pairs", "server_mean_send_ms_in_window")),
            ("server CPU % (all processes)", ("pairs", "server_cpu_pct_in_window")),
            ("server CPU ms per delivered msg", ("pairs", "server_cpu_ms_per_delivered_msg")),
            ("client CPU %", ("pairs", "client_cpu_pct_in_window")),
            ("client send lag p99 ms", ("pairs", "client_send_lag", "p99_ms")),
            ("baseline send->ack p50 ms", ("baseline", "send_to_ack", "p50_ms")),
            ("baseline send->delivery p50 ms", ("baseline", "send_to_delivery", "p50_ms")),
            ("baseline ping rtt p50 ms", ("baseline", "ping_rtt", "p50_ms"))]
    out = {}
    for label, path in rows:
        s, c = get(single, *path), get(cluster, *path)
        if s is None and c is None:
            continue
        out[label] = {"single": s, "cluster": c, "cluster_over_single": ratio(c, s)}
    return out


def print_comparison(r: dict) -> None:
    s, c = r["single"], r["cluster"]
    p = s.get("pairs", {})
    print()
    print(f"== single vs cluster: pairs {p.get('users')} users, offered {p.get('offered_msgs_per_s')} msg/s"
          f" for {s['params']['duration']} s (same options; load average at start: single"
          f" {s['machine']['loadavg_at_start']}, cluster {c['machine']['loadavg_at_start']}) ==")
    print(f"{'':34}{'single':>10}{'cluster':>10}{'cluster/single':>16}")
    for label, v in r["comparison"].items():
        print(f"{label:34}{fmt(v['single']):>10}{fmt(v['cluster']):>10}{fmt(v['cluster_over_single']):>16}")
    if r.get("different_gateway_builds"):
        print("warning: the single run and the cluster ran different gateway binaries (the sources changed and"
              " cluster.sh rebuilt them between the runs): " + r["different_gateway_builds"])
    for name, rep in (("single", s), ("cluster", c)):
        q = rep.get("pairs")
        if not q:
            continue
        cpu = ", ".join(f"{n} {v}%" for n, v in q.get("server_cpu_pct_by_process", {}).items())
        gws = ", ".join(f"{n} {fmt(g['mean_send_ms'])} ms at {g['sends_per_s']}/s"
                        for n, g in q.get("server_send_by_gateway", {}).items())
        print(f"{name:8} server CPU by process: {cpu or '-'}")
        print(f"{'':8} mean send per gateway (chat_send_duration_seconds): {gws or '-'};"
              f" client send->ack mean {fmt(q['send_to_ack']['mean_ms'])} ms")
        print(f"{'':8} exactly-once: acked {q['acked_total']}, lost {q['lost']}, duplicated {q['duplicated']},"
              f" own inbox lost {q['own_inbox_lost']} dup {q['own_inbox_duplicated']},"
              f" unacked {q['unacked_at_end']}, errors {q['errors'] or 'none'}")


def run_compare(a) -> int:
    with open(a.compare[0]) as f:
        single = json.load(f)
    with open(a.compare[1]) as f:
        cluster = json.load(f)
    report = {"command": a.command, "target": "both", "comparison": comparison(single, cluster),
              "single": single, "cluster": cluster}
    builds = {f"{t} {n}": b.get("sha256") for t, r in (("single", single), ("cluster", cluster))
              for n, b in r.get("server_binaries", {}).items() if n.startswith("gateway")}
    if len(set(builds.values())) > 1:
        report["different_gateway_builds"] = ", ".join(f"{k} {v}" for k, v in builds.items())
    print_comparison(report)
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(report, f, indent=2)
    print(f"\nJSON summary (both runs and the comparison): {a.out}")
    return 0


def parse_pairs(specs: list[str], what: str, ap) -> dict[str, str]:
    out = {}
    for spec in specs:
        name, sep, value = spec.partition("=")
        if not (sep and name and value):
            ap.error(f"{what} wants NAME=VALUE, got {spec!r}")
        out[name] = value
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", help="ws://127.0.0.1:PORT/v1/ws (the gateway, or the cluster's load balancer)")
    ap.add_argument("--pid", type=int, help="the single gateway's pid (for RSS and CPU)")
    ap.add_argument("--target", choices=("single", "cluster", "both"), default="single",
                    help="what runs behind --url (a label; run.sh sets it). idle is single only")
    ap.add_argument("--proc", action="append", default=[], metavar="NAME=PID",
                    help="a server process whose CPU and RSS count (repeatable; default gateway=--pid)")
    ap.add_argument("--metrics-url", action="append", default=[], metavar="NAME=http://HOST:PORT",
                    help="a gateway whose /metrics is read (repeatable; default: the --url's host)")
    ap.add_argument("--compare", nargs=2, metavar=("SINGLE.json", "CLUSTER.json"),
                    help="only print two runs side by side and write both into --out")
    ap.add_argument("--secret", help="the server's HS256 JWT secret")
    ap.add_argument("--scenarios", default="idle,baseline,pairs")
    ap.add_argument("--pairs", type=int, default=500)
    ap.add_argument("--rate", type=float, default=2.0, help="messages per second per user (pairs)")
    ap.add_argument("--duration", type=float, default=20.0, help="measured seconds (pairs)")
    ap.add_argument("--ramp", type=float, default=5.0, help="seconds over which senders start (pairs)")
    ap.add_argument("--drain", type=float, default=15.0, help="max seconds to wait for deliveries (pairs)")
    ap.add_argument("--pair-procs", type=int, default=4)
    ap.add_argument("--body-bytes", type=int, default=64)
    ap.add_argument("--idle-conns", type=int, default=10000)
    ap.add_argument("--idle-procs", type=int, default=4)
    ap.add_argument("--idle-hold", type=float, default=5.0)
    ap.add_argument("--idle-source-addrs", type=int, default=1, help="1: one source address 127.0.0.N per process")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results/latest.json"))
    ap.add_argument("--command", default="", help="the command line, recorded in the JSON")
    ap.add_argument("--server-flags", action="store_true",
                    help="only print the gateway flags these options need (send rate above the default)")
    a = ap.parse_args()

    scenarios = [s for s in a.scenarios.split(",") if s]
    if unknown := [s for s in scenarios if s not in ("idle", "baseline", "pairs")]:
        ap.error(f"unknown scenario(s) {','.join(unknown)}")
    if a.target != "single" and "idle" in scenarios:
        ap.error("idle measures the RSS of one server process: it runs with --target single only")
    if a.server_flags:
        # The same flags serve the gateway (single) and msg-service (cluster, CLUSTER_MSG_FLAGS).
        if a.rate > 20:  # the server's default per-user limit is 20/s, burst 50
            print(f"--send-rate {math.ceil(a.rate * 2)} --send-burst {max(50, math.ceil(a.rate * 4))}")
        return 0
    if a.compare:
        return run_compare(a)
    if not (a.url and a.secret and (a.pid or a.proc)):
        ap.error("--url, --secret and --pid (or --proc) are required (bench/run.sh passes them)")
    if not a.url.startswith("ws://127.0.0.1:"):
        ap.error("this benchmark only targets 127.0.0.1")
    if "idle" in scenarios and not a.pid:
        ap.error("idle needs --pid")
    procs = parse_pairs(a.proc, "--proc", ap)
    a.procs = {n: int(p) for n, p in procs.items()} if procs else {"gateway": a.pid}
    a.metrics = parse_pairs(a.metrics_url, "--metrics-url", ap) or {"gateway": http_base(a.url)}
    for u in a.metrics.values():
        if not u.startswith("http://127.0.0.1:"):
            ap.error("this benchmark only targets 127.0.0.1")

    report = {"command": a.command, "target": a.target, "url": a.url, "machine": machine(),
              "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "params": {k: v for k, v in vars(a).items()
                         if k not in ("secret", "url", "pid", "command", "out", "proc", "metrics_url", "compare")}}
    report["server_binaries"] = {n: exe_id(p) for n, p in a.procs.items()}
    print(f"client open-file limit {raise_nofile()} per process; {os.cpu_count()} cores shared by the server "
          f"and the client processes", flush=True)
    for s in scenarios:
        print(f"-- {s}", flush=True)
        t = time.time()
        if s == "idle":
            report["idle"] = run_idle(a, a.pid)
        elif s == "baseline":
            report["baseline"] = run_baseline(a)
        elif s == "pairs":
            report["pairs"] = run_pairs(a)
        print(f"   done in {time.time() - t:.1f} s", flush=True)
        time.sleep(1.0)
    report["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    print_report(report)
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(report, f, indent=2)
    print(f"\nJSON summary: {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
