"""QStash request signatures: what the verifier accepts and refuses, and agreement with the official SDK."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest
import qstash
from qstash.errors import SignatureError

from infrastructure.delivery.qstash_signature import (
    InMemorySeenTokenIds,
    InvalidSignature,
    QStashSignatureVerifier,
)
from tests.support.qstash_emulator import delivery_claims, new_signing_key, sign_claims

CURRENT_KEY = "sig_current_0123456789abcdef0123456789"
NEXT_KEY = "sig_next_fedcba9876543210fedcba9876543210"
PUBLIC_URL = "https://mediatasks.example/v1/deliveries/qstash"
BODY = b'{"task_id":"4f7c","attempt":1}'


def make_verifier(tolerance_s: float = 5) -> QStashSignatureVerifier:
    return QStashSignatureVerifier(
        CURRENT_KEY, NEXT_KEY, PUBLIC_URL, clock_tolerance_s=tolerance_s, seen_token_ids=InMemorySeenTokenIds()
    )


def token(key: str = CURRENT_KEY, algorithm: str = "HS256", **overrides: Any) -> str:
    claims = delivery_claims(PUBLIC_URL, BODY)
    claims.update(overrides)
    return sign_claims({name: value for name, value in claims.items() if value is not None}, key, algorithm)


def refusal(signature: str | None, body: bytes = BODY, verifier: QStashSignatureVerifier | None = None) -> str:
    with pytest.raises(InvalidSignature) as refused:
        (verifier or make_verifier()).verify(signature, body)
    return refused.value.reason


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def test_token_signed_with_the_current_key_is_accepted_and_its_claims_returned() -> None:
    signature = token()

    claims = make_verifier().verify(signature, BODY)

    assert claims["sub"] == PUBLIC_URL
    assert claims["iss"] == "Upstash"
    assert claims["jti"].startswith("jwt_")


def test_token_signed_with_the_next_key_is_accepted() -> None:
    assert make_verifier().verify(token(key=NEXT_KEY), BODY)["sub"] == PUBLIC_URL


def test_token_signed_with_another_key_is_refused() -> None:
    assert "neither" in refusal(token(key=new_signing_key()))


def test_tampered_body_is_refused() -> None:
    assert "body hash" in refusal(token(), body=BODY.replace(b'"attempt":1', b'"attempt":2'))


@pytest.mark.parametrize("pad_body_hash", [True, False], ids=["padded", "unpadded"])
def test_body_hash_with_or_without_padding_is_accepted(pad_body_hash: bool) -> None:
    claims = delivery_claims(PUBLIC_URL, BODY, pad_body_hash=pad_body_hash)
    assert claims["body"].endswith("=") is pad_body_hash

    assert make_verifier().verify(sign_claims(claims, CURRENT_KEY), BODY)["body"] == claims["body"]


def test_token_for_another_url_is_refused_even_the_one_the_request_arrived_at() -> None:
    reason = refusal(token(sub="http://127.0.0.1:8000/v1/deliveries/qstash"))
    assert "InvalidSubjectError" in reason


def test_wrong_issuer_is_refused() -> None:
    assert "InvalidIssuerError" in refusal(token(iss="Mallory"))


def test_expired_token_is_refused() -> None:
    now = int(time.time())
    assert "ExpiredSignatureError" in refusal(token(iat=now - 400, nbf=now - 400, exp=now - 100))


def test_expiry_within_the_clock_tolerance_is_accepted() -> None:
    now = int(time.time())
    make_verifier(tolerance_s=5).verify(token(iat=now - 300, nbf=now - 300, exp=now - 2), BODY)


@pytest.mark.parametrize("claim", ["nbf", "iat"])
def test_token_not_yet_valid_is_refused(claim: str) -> None:
    assert "ImmatureSignatureError" in refusal(token(**{claim: int(time.time()) + 60}))


@pytest.mark.parametrize("claim", ["iss", "sub", "exp", "nbf", "jti", "body"])
def test_token_missing_a_claim_is_refused(claim: str) -> None:
    assert "MissingRequiredClaimError" in refusal(token(**{claim: None}))


def test_replayed_token_is_refused() -> None:
    verifier = make_verifier()
    signature = token()
    verifier.verify(signature, BODY)

    assert "already used" in refusal(signature, verifier=verifier)


def test_new_token_reusing_a_seen_token_id_is_refused() -> None:
    verifier = make_verifier()
    verifier.verify(token(jti="jwt_same"), BODY)

    assert "already used" in refusal(token(jti="jwt_same"), verifier=verifier)


def test_refused_token_does_not_use_up_its_id() -> None:
    verifier = make_verifier()
    refusal(token(jti="jwt_once"), body=b"tampered", verifier=verifier)

    verifier.verify(token(jti="jwt_once"), BODY)


@pytest.mark.parametrize("signature", [None, ""], ids=["absent", "empty"])
def test_missing_signature_is_refused(signature: str | None) -> None:
    assert "missing" in refusal(signature)


@pytest.mark.parametrize("signature", ["not-a-jwt", "a.b.c", "....", "eyJhbGciOiJIUzI1NiJ9..sig"])
def test_garbage_signature_is_refused(signature: str) -> None:
    refusal(signature)


def test_unsigned_token_with_alg_none_is_refused() -> None:
    header = b64url(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    payload = b64url(json.dumps(delivery_claims(PUBLIC_URL, BODY)).encode())

    assert "InvalidAlgorithmError" in refusal(f"{header}.{payload}.")


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
@pytest.mark.parametrize("algorithm", ["HS384", "HS512"])
def test_token_with_another_algorithm_is_refused_even_with_the_right_key(algorithm: str) -> None:
    assert "InvalidAlgorithmError" in refusal(token(algorithm=algorithm))


def test_verifier_needs_a_key_and_the_public_url() -> None:
    with pytest.raises(ValueError):
        QStashSignatureVerifier("", "", PUBLIC_URL, seen_token_ids=InMemorySeenTokenIds())
    with pytest.raises(ValueError):
        QStashSignatureVerifier(CURRENT_KEY, NEXT_KEY, "", seen_token_ids=InMemorySeenTokenIds())


def test_seen_token_ids_are_forgotten_once_expired() -> None:
    now = [1000.0]
    seen = InMemorySeenTokenIds(clock=lambda: now[0])

    assert seen.remember("a", expires_at=1010.0)
    assert not seen.remember("a", expires_at=1010.0)
    now[0] = 1011.0
    assert seen.remember("a", expires_at=1400.0)
    assert len(seen) == 1


def test_seen_token_ids_are_bounded_forgetting_the_soonest_to_expire() -> None:
    seen = InMemorySeenTokenIds(max_entries=2, clock=lambda: 0.0)
    seen.remember("late", expires_at=300.0)
    seen.remember("soon", expires_at=100.0)

    assert seen.remember("third", expires_at=200.0)

    assert len(seen) == 2
    assert not seen.remember("late", expires_at=300.0)
    assert seen.remember("soon", expires_at=100.0)


@pytest.mark.parametrize("pad_body_hash", [True, False], ids=["padded", "unpadded"])
@pytest.mark.parametrize("signed_with", ["current", "next"])
def test_official_sdk_receiver_accepts_what_the_emulator_signs(pad_body_hash: bool, signed_with: str) -> None:
    current, upcoming = new_signing_key(), new_signing_key()
    key = current if signed_with == "current" else upcoming
    signature = sign_claims(delivery_claims(PUBLIC_URL, BODY, pad_body_hash=pad_body_hash), key)
    receiver = qstash.Receiver(current_signing_key=current, next_signing_key=upcoming)

    receiver.verify(signature=signature, body=BODY.decode(), url=PUBLIC_URL)
    ours = QStashSignatureVerifier(current, upcoming, PUBLIC_URL, seen_token_ids=InMemorySeenTokenIds())
    assert ours.verify(signature, BODY)["sub"] == PUBLIC_URL


def test_official_sdk_receiver_refuses_the_same_token_for_another_url_or_body() -> None:
    receiver = qstash.Receiver(current_signing_key=CURRENT_KEY, next_signing_key=NEXT_KEY)
    signature = token()

    with pytest.raises(SignatureError):
        receiver.verify(signature=signature, body=BODY.decode(), url="https://elsewhere.example/hook")
    with pytest.raises(SignatureError):
        receiver.verify(signature=signature, body="{}", url=PUBLIC_URL)
