"""Sync over a slow link: one stream against several, through a throttling proxy.

The replica (``dsf_replica``) is reached through `ThrottledProxy` (``_throttle.py``): a TCP proxy on
``127.0.0.1`` started by this benchmark, capping each connection at 8 MB/s in each direction and
adding 40 ms of latency each way (80 ms more per round trip), as a remote WRDS would. The same
``wh.sync("crsp.dsf")`` into an empty vault runs in a fresh subprocess (``_measure.py``) with
``WrdsSource(streams=1)`` and with the default ``streams`` (WRDS's per-user connection limit
less one); ``extra_info`` gets both times, ``stream_speedup`` (target >= 2.5) and the peak RSS of
each, per stream (``rss_per_stream_ratio``: the parallel sync's growth over its starting RSS,
divided by its streams, over the one-stream sync's growth; target <= 1). Row counts and the
number of connections through the proxy are asserted, timings are not.

Also recorded, so that a reader can tell what is bound by the link and what by CPU: each
path's CPU time (``*_cpu_seconds``: the measured sync's user + system time over all its
threads; ``*_process_cpu_seconds``: the whole child process's), the proxy's CPU
time and the bytes it carried from the server (``proxy_cpu_seconds``, ``wire_mb``), and the
same two syncs without the proxy (``unthrottled_one_stream_*``, ``unthrottled_streams_*``,
``unthrottled_speedup``): on a two-core machine that also runs the replica, four streams
without the link's limit are bound by CPU.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from wrdsvault.sources.wrds import DEFAULT_STREAMS, WRDS_CONNECTION_LIMIT


@pytest.mark.benchmark(group="sync-throttled")
def test_sync_over_a_throttled_link(
    benchmark: Any,
    dsf_replica: Any,
    measure: Any,
    throttle: Any,
    bench_sizes: Any,
    tmp_path: Path,
) -> None:
    """Warehouse.sync through an 8 MB/s, 40 ms proxy: default streams against one stream."""
    connect = dict(dsf_replica.connect)
    socket = f"{connect['wrds_connect_args']['host']}/.s.PGSQL.{connect['wrds_port']}"
    with throttle.ThrottledProxy(socket) as proxy:
        connect.update(
            wrds_hostname="127.0.0.1",
            wrds_port=proxy.port,
            wrds_connect_args={"sslmode": "disable"},
        )

        def run(streams: int, kwargs: dict[str, Any] = connect) -> dict[str, Any]:
            results = []
            for i in range(bench_sizes.sync_rounds):
                vault = tmp_path / f"s{streams}-{i}"
                results.append(measure.measure("sync", None, kwargs, vault, streams=streams))
                shutil.rmtree(vault, ignore_errors=True)
            return measure.median_of(results)

        one = run(1)
        wire = proxy.bytes_down / bench_sizes.sync_rounds
        before = proxy.connections
        many = benchmark.pedantic(run, args=(DEFAULT_STREAMS,), rounds=1, iterations=1)
        peak = proxy.peak_connections
        assert proxy.connections > before
    proxy_cpu = proxy.cpu_seconds / 2 / bench_sizes.sync_rounds
    plain_one = run(1, dsf_replica.connect)
    plain_many = run(DEFAULT_STREAMS, dsf_replica.connect)
    assert one["rows"] == many["rows"] == plain_one["rows"] == plain_many["rows"]
    assert one["rows"] == dsf_replica.rows
    assert peak <= WRDS_CONNECTION_LIMIT
    info = benchmark.extra_info
    info["rows"] = dsf_replica.rows
    info["rate_bytes_s"] = throttle.RATE_BYTES_S
    info["latency_ms"] = round(throttle.LATENCY_S * 1000)
    info["streams"] = DEFAULT_STREAMS
    info["peak_proxy_connections"] = peak
    measure.record(info, "one_stream", one)
    measure.record(info, "streams", many)
    info["stream_speedup"] = round(one["seconds"] / many["seconds"], 2)
    grow_one = max(1, one["peak_rss_bytes"] - one["start_rss_bytes"])
    grow_many = max(1, many["peak_rss_bytes"] - many["start_rss_bytes"])
    info["rss_per_stream_ratio"] = round(grow_many / DEFAULT_STREAMS / grow_one, 3)
    info["wire_mb"] = round(wire / 1e6, 1)
    info["proxy_cpu_seconds"] = round(proxy_cpu, 2)
    measure.record(info, "unthrottled_one_stream", plain_one)
    measure.record(info, "unthrottled_streams", plain_many)
    info["unthrottled_speedup"] = round(plain_one["seconds"] / plain_many["seconds"], 2)
    info["targets"] = "stream_speedup >= 2.5, rss_per_stream_ratio <= 1"
