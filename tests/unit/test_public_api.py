"""The public API is small, curated and documented."""

from __future__ import annotations

import inspect

import offload

EXPECTED = {
    "App",
    "BoundTask",
    "BrokerError",
    "BrokerUnavailable",
    "CallOptions",
    "Cancel",
    "ConfigurationError",
    "DecodeError",
    "ErrorRecord",
    "JobCancelled",
    "JobContext",
    "JobError",
    "JobFailed",
    "JobHandle",
    "JobInfo",
    "JobNotFound",
    "JobState",
    "OffloadError",
    "PayloadTooLarge",
    "QueueFull",
    "ResultTimeout",
    "Retry",
    "RetryPolicy",
    "SchemaOutOfDate",
    "SerializationError",
    "Signature",
    "SyncJobHandle",
    "Task",
    "UnknownTask",
    "__version__",
    "constant",
    "current_job",
    "exponential",
    "progress",
    "progress_sync",
}


def test_all_is_exactly_the_curated_api() -> None:
    assert set(offload.__all__) >= EXPECTED
    for name in offload.__all__:
        assert hasattr(offload, name), name


def test_every_public_symbol_has_a_docstring() -> None:
    for name in offload.__all__:
        obj = getattr(offload, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert (obj.__doc__ or "").strip(), f"{name} has no docstring"


def test_errors_form_one_tree() -> None:
    for name in offload.__all__:
        obj = getattr(offload, name)
        if inspect.isclass(obj) and issubclass(obj, Exception):
            assert issubclass(obj, offload.OffloadError), name
