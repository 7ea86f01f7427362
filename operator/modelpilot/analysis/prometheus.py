"""Prometheus metric provider built on ``prometheus_api_client.PrometheusConnect``.

An instant query that returns one sample becomes a value; an empty vector, NaN, several
series, an HTTP error or an unreachable server become ``MetricValue(None, ok=False, ...)``.
Retries are off by default: the analysis runs again next interval anyway, and a stopped
Prometheus must not stall the operator for the client's default 6 s of back-off.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import requests
from prometheus_api_client import PrometheusApiClientException, PrometheusConnect
from urllib3.util.retry import Retry

from .providers import MetricProblem, MetricValue

DEFAULT_TIMEOUT_S = 10.0


def _sample_value(sample: Any) -> str:
    """The value string of a ``[timestamp, "value"]`` pair."""
    if not (isinstance(sample, Sequence) and len(sample) == 2):
        raise ValueError(f"unexpected sample {sample!r}")
    return sample[1]


def interpret_result(result: Any) -> MetricValue:
    """Turn the ``data.result`` of an instant query into a ``MetricValue``.

    Vector results arrive as a list of ``{"metric": ..., "value": [ts, "v"]}``; scalar
    results as a bare ``[ts, "v"]`` pair.
    """
    try:
        if isinstance(result, list) and len(result) == 2 and not isinstance(result[0], Mapping):
            raw = _sample_value(result)
        elif isinstance(result, list):
            if not result:
                return MetricValue.missing(
                    MetricProblem.NO_DATA, "no data: the query returned an empty vector"
                )
            if len(result) > 1:
                return MetricValue.missing(
                    MetricProblem.AMBIGUOUS,
                    f"expected one series, got {len(result)}; aggregate the query (e.g. sum)",
                )
            raw = _sample_value(result[0]["value"])
        else:
            raise ValueError(f"unexpected result {result!r}")
        value = float(raw)
    except (KeyError, TypeError, ValueError) as error:
        return MetricValue.missing(MetricProblem.QUERY_ERROR, f"malformed Prometheus response: {error}")
    if math.isnan(value):
        return MetricValue.missing(
            MetricProblem.NOT_A_NUMBER, "not a number (e.g. 0/0: no requests in the window)"
        )
    return MetricValue.of(value)


def interpret_grouped(result: Any, labels: Sequence[str]) -> dict[str, float] | MetricValue:
    """A vector result as ``{"<label values joined by />": value}``; NaN and infinities dropped."""
    if not isinstance(result, list):
        return MetricValue.missing(MetricProblem.QUERY_ERROR, f"malformed Prometheus response: {result!r}")
    out: dict[str, float] = {}
    try:
        for series in result:
            key = "/".join(str(series["metric"].get(label, "")) for label in labels)
            value = float(_sample_value(series["value"]))
            if math.isfinite(value):
                out[key] = out.get(key, 0.0) + value
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        return MetricValue.missing(MetricProblem.QUERY_ERROR, f"malformed Prometheus response: {error}")
    if not out:
        return MetricValue.missing(MetricProblem.NO_DATA, "no data: the query returned an empty vector")
    return out


class PrometheusProvider:
    """``MetricProvider`` for a Prometheus HTTP API."""

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        retries: int = 0,
        headers: Mapping[str, str] | None = None,
        disable_ssl: bool = False,
        client: PrometheusConnect | None = None,
    ) -> None:
        self.url = url
        self._timeout_s = timeout_s
        self._client = client or PrometheusConnect(
            url=url,
            headers=dict(headers) if headers else None,
            disable_ssl=disable_ssl,
            retry=Retry(total=retries, backoff_factor=0.2, status_forcelist=(502, 503, 504)),
            timeout=timeout_s,
        )

    def _query(self, query: str, at: float | None) -> Any:
        """The raw ``data.result``, or a ``MetricValue`` saying why there is none."""
        params = {"time": f"{at:.3f}"} if at is not None else None
        try:
            return self._client.custom_query(query, params=params)
        except requests.exceptions.InvalidJSONError as error:  # also a RequestException
            return MetricValue.missing(MetricProblem.QUERY_ERROR, f"malformed Prometheus response: {error}")
        except requests.exceptions.RequestException as error:
            return MetricValue.missing(
                MetricProblem.UNREACHABLE, f"Prometheus at {self.url} unreachable: {error}"
            )
        except PrometheusApiClientException as error:
            return MetricValue.missing(MetricProblem.QUERY_ERROR, f"Prometheus rejected the query: {error}")
        except (ValueError, KeyError, TypeError) as error:  # non-JSON or unexpected body
            return MetricValue.missing(MetricProblem.QUERY_ERROR, f"malformed Prometheus response: {error}")

    def evaluate(self, query: str, *, at: float | None = None) -> MetricValue:
        result = self._query(query, at)
        return result if isinstance(result, MetricValue) else interpret_result(result)

    def evaluate_grouped(
        self, query: str, labels: Sequence[str], *, at: float | None = None
    ) -> dict[str, float] | MetricValue:
        """A vector query's finite values keyed by ``labels`` (joined with "/"): counts per class."""
        result = self._query(query, at)
        return result if isinstance(result, MetricValue) else interpret_grouped(result, labels)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> PrometheusProvider:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
