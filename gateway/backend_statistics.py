"""ModelStatistics of several inference servers as one answer: the counts of each version added up.

A version served by two replicas has one entry, its counts and durations the sums of the
replicas' (its ``last_inference`` the latest), so a client sees the gateway's whole traffic.
"""

from __future__ import annotations

from collections.abc import Iterable

from google.protobuf.message import Message

from protos.generated import inference_pb2 as pb


def _add_durations(into: Message, other: Message) -> None:
    """Add every StatisticDuration field of ``other`` to ``into`` (same message type)."""
    for descriptor, value in other.ListFields():
        if isinstance(value, pb.StatisticDuration):
            target = getattr(into, descriptor.name)
            target.count += value.count
            target.ns += value.ns


def merge_statistics(answers: Iterable[pb.ModelStatisticsResponse]) -> pb.ModelStatisticsResponse:
    merged: dict[tuple[str, str], pb.ModelStatistics] = {}
    for answer in answers:
        for stats in answer.model_stats:
            entry = merged.get((stats.name, stats.version))
            if entry is None:
                merged[(stats.name, stats.version)] = entry = pb.ModelStatistics()
                entry.CopyFrom(stats)
                continue
            entry.last_inference = max(entry.last_inference, stats.last_inference)
            entry.inference_count += stats.inference_count
            entry.execution_count += stats.execution_count
            _add_durations(entry.inference_stats, stats.inference_stats)
            batches = {batch.batch_size: batch for batch in entry.batch_stats}
            for batch in stats.batch_stats:
                if batch.batch_size in batches:
                    _add_durations(batches[batch.batch_size], batch)
                else:
                    entry.batch_stats.add().CopyFrom(batch)
            for key, response in stats.response_stats.items():
                _add_durations(entry.response_stats[key], response)
    ordered = [merged[key] for key in sorted(merged, key=lambda k: (k[0], _number(k[1])))]
    return pb.ModelStatisticsResponse(model_stats=ordered)


def _number(version: str) -> int:
    return int(version) if version.isdecimal() else -1
