"""Fuzz the selection service from its own OpenAPI schema: no generated request may get a 5xx.

schemathesis turns each operation of /openapi.json into a hypothesis strategy, both requests
the schema allows (positive) and requests it forbids (negative: wrong types, missing fields,
out-of-range options); each is sent to the running service and its status counted. A user's
mistake must come back as a 4xx naming the field, so any 5xx is a defect.

    python bench/service_fuzz.py --url http://127.0.0.1:8000 [--cases 1000] [--api-key-env NAME]

bench/service.py runs it against the service it starts; alone it prints the figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
from collections import Counter
from typing import Any

# GETs take no parameters: a few calls each say all there is; the POST bodies get the rest.
GET_CASES = 5
FIRST_FAILURES = 5


def fuzz_service(url: str, cases: int = 1000, api_key: str | None = None, seed: int = 0) -> dict[str, Any]:
    """Send about `cases` generated requests (positive and negative) to the service at `url`.

    Returns:
        {"fuzz_cases": requests sent, "fuzz_5xx": answers with status >= 500,
         "statuses": {"<METHOD path> <status>": count}, "failures": the first few 5xx
         (operation, body, query, status, the start of the answer)}.
    """
    import schemathesis
    schema = schemathesis.openapi.from_url(url.rstrip("/") + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    posts = [op for op in operations if op.method.upper() != "GET"]
    # hypothesis drops repeated examples: ask for a twentieth more than the share of `cases`.
    per_post = -(-max(0, cases * 21 // 20 - len(operations) + len(posts)) // max(1, 2 * len(posts)))
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
    statuses: Counter[str] = Counter()
    failures: list[dict[str, Any]] = []

    for op in operations:
        # A GET here takes no parameter: there is nothing to make invalid (negative mode has no example).
        modes = [schemathesis.GenerationMode.POSITIVE] + ([schemathesis.GenerationMode.NEGATIVE] if op in posts else [])
        for mode in modes:
            _fuzz_operation(op, mode, per_post if op in posts else GET_CASES, url, headers, statuses, failures)
    return {"fuzz_cases": sum(statuses.values()),
            "fuzz_5xx": sum(n for key, n in statuses.items() if int(key.rsplit(" ", 1)[1]) >= 500),
            "statuses": dict(sorted(statuses.items())), "failures": failures}


def _fuzz_operation(op: Any, mode: Any, examples: int, url: str, headers: dict[str, str] | None,
                    statuses: Counter[str], failures: list[dict[str, Any]]) -> None:
    """`examples` generated requests for one operation in one generation mode, their statuses counted."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis.errors import Unsatisfiable

    @settings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck),
              phases=[Phase.generate], print_blob=False)
    @given(case=op.as_strategy(generation_mode=mode))
    def send(case: Any) -> None:
        response = case.call(base_url=url, headers=headers, timeout=120)
        statuses[f"{op.label} {response.status_code}"] += 1
        if response.status_code >= 500 and len(failures) < FIRST_FAILURES:
            failures.append({"operation": op.label, "body": _plain(case.body), "query": case.query,
                             "status": response.status_code, "answer": response.text[:300]})

    try:
        send()
    except Unsatisfiable:
        pass  # negative mode on an operation with no parameter: there is nothing to make invalid


def _plain(body: Any) -> Any:
    """The body as JSON can hold it (schemathesis marks an absent body with a sentinel)."""
    try:
        json.dumps(body)
        return body
    except (TypeError, ValueError):
        return repr(body)[:300]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--cases", type=int, default=1000)
    parser.add_argument("--api-key-env", default=None, help="Environment variable holding the bearer token.")
    args = parser.parse_args()
    key = os.environ.get(args.api_key_env) if args.api_key_env else None
    print(json.dumps(fuzz_service(args.url, args.cases, key), indent=1))


if __name__ == "__main__":
    main()
