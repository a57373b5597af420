"""The work of one chain validation is bounded (issue 17 item 1).

An x5u body of 64 KiB holds about 90 certificates. Look-alike CAs that share one name and one
key all verify as each other's issuer; a search that follows names and signatures without a
bound tried every ordering of them (n = 8 took seconds). These tests count the work, never
the time: every signature check of the explanation search goes through one helper, which is
counted, and the :class:`ValidationBudget` says what it charged and why it stopped.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509

from shaken.core import chain as chain_module
from shaken.core.chain import (
    DEFAULT_SIGNATURE_CHECKS,
    VERIFIER_SIGNATURE_CHECKS,
    ValidationBudget,
    validate_chain,
)
from shaken.core.errors import ChainError, ConfigurationError
from shaken.core.reasons import Reason
from shaken.testing import StiPki, make_sti_pki
from tests.support.lookalikes import lookalike_chain

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def pki() -> StiPki:
    return make_sti_pki(NOW)


class _Counter:
    checks = 0


@pytest.fixture
def search_checks(monkeypatch: pytest.MonkeyPatch) -> Iterator[_Counter]:
    """Counts the explanation search's signature checks; stops a search that runs away.

    Before the fix the search made 69,280 checks for n = 8 (and n = 90 would not end); the
    counter fails the test at the first check past the default budget instead of waiting.
    """
    counter = _Counter()
    original = chain_module._issued_by

    def counting(child: x509.Certificate, parent: x509.Certificate) -> bool:
        counter.checks += 1
        if counter.checks > DEFAULT_SIGNATURE_CHECKS:
            raise AssertionError(f"the search made more than {DEFAULT_SIGNATURE_CHECKS} checks")
        return original(child, parent)

    monkeypatch.setattr(chain_module, "_issued_by", counting)
    yield counter


@pytest.mark.parametrize("n", [8, 90])
def test_17_1_lookalike_cas_stay_within_the_budget(
    pki: StiPki, search_checks: _Counter, n: int
) -> None:
    built = lookalike_chain(n, NOW)
    budget = ValidationBudget()
    with pytest.raises(ChainError) as info:
        validate_chain(list(built.certificates), pki.trust_anchors, at=NOW, budget=budget)
    assert info.value.reason is Reason.CERT_UNTRUSTED
    # None of them names an anchor, so the search needs no signature check at all.
    assert search_checks.checks == 0
    assert budget.spent <= budget.limit == DEFAULT_SIGNATURE_CHECKS
    assert len(built.pem) < 64 * 1024 or n < 90


def test_17_1_lookalikes_of_the_root_spend_the_budget_and_stop(
    pki: StiPki, search_checks: _Counter
) -> None:
    """Look-alikes with the root's name: every one names an anchor as its issuer."""
    built = lookalike_chain(90, NOW, name=pki.root.subject)
    assert len(built.pem) <= 64 * 1024  # what the fetcher's default body cap lets through
    budget = ValidationBudget()
    with pytest.raises(ChainError) as info:
        validate_chain(list(built.certificates), pki.trust_anchors, at=NOW, budget=budget)
    assert info.value.reason is Reason.CERT_UNTRUSTED
    assert info.value.fields["exhausted"] == "signature_checks"
    assert info.value.fields["spent"] == budget.spent <= DEFAULT_SIGNATURE_CHECKS
    assert budget.exhausted == "signature_checks"
    assert "validation stopped" in info.value.detail
    assert search_checks.checks <= DEFAULT_SIGNATURE_CHECKS - VERIFIER_SIGNATURE_CHECKS


@pytest.mark.parametrize("n", [4, 5, 6, 7, 8])
def test_17_1_small_lookalike_sets_cost_a_few_checks_each(
    pki: StiPki, search_checks: _Counter, n: int
) -> None:
    """The sizes the issue measured (n = 4..8): each pair is checked at most once."""
    built = lookalike_chain(n, NOW, name=pki.root.subject)
    with pytest.raises(ChainError) as info:
        validate_chain(list(built.certificates), pki.trust_anchors, at=NOW)
    assert info.value.reason is Reason.CERT_UNTRUSTED
    # Backward from the root, each look-alike is checked once against it (and fails).
    assert search_checks.checks <= n + 1


def test_17_1_the_deadline_stops_the_validation(pki: StiPki, search_checks: _Counter) -> None:
    built = lookalike_chain(90, NOW, name=pki.root.subject)
    asked = 0

    def expired() -> bool:
        nonlocal asked
        asked += 1
        return asked > 20

    budget = ValidationBudget(expired=expired)
    with pytest.raises(ChainError) as info:
        validate_chain(list(built.certificates), pki.trust_anchors, at=NOW, budget=budget)
    assert info.value.reason is Reason.CERT_UNTRUSTED
    assert info.value.fields["exhausted"] == budget.exhausted == "deadline"
    assert "time ran out" in info.value.detail
    assert asked == 21  # it stopped at the first answer "expired"


def test_17_1_an_expired_chain_is_still_explained(search_checks: _Counter) -> None:
    """The search still tells "expired" from "untrusted", for a handful of checks."""
    pki = make_sti_pki(NOW, intermediate_validity=(timedelta(days=30), timedelta(days=10)))
    budget = ValidationBudget()
    with pytest.raises(ChainError) as info:
        validate_chain(
            [pki.leaf, pki.intermediate],
            pki.trust_anchors,
            at=NOW + timedelta(days=20),
            budget=budget,
        )
    assert info.value.reason is Reason.CERT_EXPIRED
    assert info.value.fields["depth"] == 1
    assert search_checks.checks == 2  # leaf <- intermediate <- root, once each
    assert budget.spent <= 8


def test_17_1_a_valid_chain_costs_its_path(pki: StiPki) -> None:
    budget = ValidationBudget()
    validate_chain([pki.leaf, pki.intermediate], pki.trust_anchors, at=NOW, budget=budget)
    assert budget.spent == 2 and budget.exhausted is None


def test_17_1_a_budget_holds_at_least_one_verifier_call() -> None:
    with pytest.raises(ConfigurationError):
        ValidationBudget(VERIFIER_SIGNATURE_CHECKS - 1)
