"""Key rotation's pure parts: the lookup order, what depends on which key id and what is
said about it, and the columns a re-key writes."""

from __future__ import annotations

import pytest

from app.keyring import KINDS, KeyedRows, refusal, rekeyed_columns
from app.kit.hashing import lookup_key, token_hash
from app.kit.keys import HashKey, KeyRing, is_sealed
from app.tokens.models import keyed_columns, opened_hash
from app.tokens.repository import KeyedToken

K1 = HashKey.of("k1", b"1" * 40)
K2 = HashKey.of("k2", b"2" * 40)
K3 = HashKey.of("k3", b"3" * 40)


@pytest.mark.parametrize(
    ("keys", "order"),
    [
        ((K1,), ("k1",)),
        # Current, older, then current again: a row moved meanwhile is found at the end.
        ((K2, K1), ("k2", "k1", "k2")),
        ((K3, K2, K1), ("k3", "k2", "k1", "k3")),
    ],
)
def test_a_value_is_looked_up_under_the_current_key_again_after_the_older_ones(
    keys: tuple[HashKey, ...], order: tuple[str, ...]
) -> None:
    assert tuple(key.id for key in KeyRing(keys).lookup_order) == order


def rows(**by_key: dict[str, int]) -> KeyedRows:
    return KeyedRows(
        current="k2",
        listed=("k2", "k1"),
        rows={key_id: dict.fromkeys(KINDS, 0) | kinds for key_id, kinds in by_key.items()},
    )


def test_only_unlisted_key_ids_that_rows_depend_on_refuse_a_start() -> None:
    counted = rows(
        k2={"tokens": 5},
        k1={"service_secrets": 1},  # listed
        old={"client_secrets": 2, "service_access_tokens": 1},
        gone={},  # nothing depends on it
    )
    assert set(counted.unlisted()) == {"old"}
    assert refusal(counted) == (
        "rows depend on hash secret key ids that are not listed: "
        "'old' (1 service access tokens, 2 client secrets)"
    )
    assert refusal(rows(k2={"tokens": 5}, k1={})) is None


def test_unsealed_tokens_are_a_part_of_the_tokens_not_more_rows() -> None:
    counted = rows(k2={}, k1={}, default={"tokens": 3, "unsealed_tokens": 3})
    assert counted.dependents("default") == 3
    assert refusal(counted) == (
        "rows depend on hash secret key ids that are not listed: 'default' (3 tokens)"
    )


def test_the_table_the_json_and_the_metric_say_the_same() -> None:
    counted = rows(k2={"tokens": 5, "unsealed_tokens": 1}, k1={"service_secrets": 1}, old={})
    document = counted.document()
    assert document["current"] == "k2"
    assert document["listed"] == ["k2", "k1"]
    assert document["keys"]["k1"] == {"status": "listed", **counted.rows["k1"]}
    assert document["keys"]["old"]["status"] == "unlisted"
    samples = {(kind, key_id): rows_ for kind, key_id, rows_ in counted.samples()}
    assert samples == {
        (kind, key_id): count
        for key_id, kinds in document["keys"].items()
        for kind, count in kinds.items()
        if kind != "status"
    }
    lines = counted.table().splitlines()
    assert lines[1].split() == ["k2", "current", "5", "1", "0", "0", "0"]
    assert lines[2].split() == ["k1", "listed", "0", "0", "1", "0", "0"]
    assert "k2: 1 token rows are not sealed yet; `tokenstore rekey` seals them." in lines
    assert any(
        line.startswith("k1: 1 service secrets depend on it; keep it listed.") for line in lines
    )


def stored(key: HashKey, access: str, refresh: str | None) -> KeyedToken:
    columns = keyed_columns(access, refresh, key=key, service_api_key=9, token_id="t")
    return KeyedToken(1, 9, "t", key.id, columns["access_hash"], columns["refresh_hash"])


def test_a_rekey_makes_the_lookup_keys_and_seals_anew_under_the_current_key() -> None:
    access, refresh = token_hash("a"), token_hash("r")
    columns = rekeyed_columns(stored(K1, access, refresh), KeyRing((K2, K1)))
    assert columns is not None
    assert columns["row_id"] == 1
    assert columns["key_id"] == "k2"
    assert columns["access_key"] == lookup_key(9, access, K2.secret)
    assert is_sealed(columns["access_hash"])
    moved = KeyedToken(1, 9, "t", "k2", columns["access_hash"], columns["refresh_hash"])
    assert opened_hash(moved, KeyRing((K2,)), "access") == access
    assert opened_hash(moved, KeyRing((K2,)), "refresh") == refresh


def test_a_row_its_key_does_not_open_is_not_rekeyed() -> None:
    impostor = HashKey.of("k1", b"x" * 40)
    assert rekeyed_columns(stored(K1, token_hash("a"), None), KeyRing((K2, impostor))) is None
