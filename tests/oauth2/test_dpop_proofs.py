"""RFC 9449 §4.3, one check at a time: each way a proof can be wrong is refused by its own test,
with proofs signed by joserfc (ES256, EdDSA, RS256), as a client library would make them."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from joserfc import jws
from joserfc.jwk import ECKey, OctKey, OKPKey, RSAKey, thumbprint

from app.oauth2 import dpop

NOW = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
URL = "https://tessera.test/oauth2/token"


def key(kind: str = "EC"):  # noqa: ANN201
    return {"EC": lambda: ECKey.generate_key("P-256"), "OKP": lambda: OKPKey.generate_key(
        "Ed25519"), "RSA": lambda: RSAKey.generate_key(2048)}[kind]()


def proof(k, *, alg: str = "ES256", typ: str = "dpop+jwt", htm: str = "POST",  # noqa: ANN001
          htu: str = URL, iat: float | None = None, jti: str | None = "j1",
          jwk: dict | None = None, **claims: object) -> str:
    header = {"typ": typ, "alg": alg, "jwk": jwk if jwk is not None else k.as_dict(private=False)}
    body = {"htm": htm, "htu": htu, "iat": NOW.timestamp() if iat is None else iat, **claims}
    if jti is not None:
        body["jti"] = jti
    return jws.serialize_compact(header, json.dumps(body), k, algorithms=[alg])


def refused(p: str, **kw: object) -> str:
    with pytest.raises(dpop.InvalidDPoPProof) as caught:
        dpop.verify(p, **{"method": "POST", "url": URL, "now": NOW, **kw})
    return caught.value.description


@pytest.mark.parametrize(("kind", "alg"), [("EC", "ES256"), ("OKP", "Ed25519"),
                                           ("RSA", "RS256"), ("RSA", "PS256")])
def test_a_good_proof_gives_its_keys_thumbprint(kind: str, alg: str) -> None:
    k = key(kind)
    found = dpop.verify(proof(k, alg=alg), method="POST", url=URL, now=NOW)
    assert found.jkt == thumbprint(k.as_dict(private=False))
    assert found.jti == "j1" and found.iat == NOW


def test_htu_is_compared_without_query_fragment_default_port_or_case() -> None:
    k = key()
    for sent in ["https://TESSERA.test:443/oauth2/token", "https://tessera.test/oauth2/token?x=1",
                 "https://tessera.test/oauth2/token#f"]:
        dpop.verify(proof(k, htu=sent), method="POST", url=URL, now=NOW)
    assert "htu" in refused(proof(k, htu="https://tessera.test/oauth2/token/"))
    assert "htu" in refused(proof(k, htu="https://evil.test/oauth2/token"))
    assert "htu" in refused(proof(k, htu="http://tessera.test/oauth2/token"))
    assert "htu" in refused(proof(k, htu="https://tessera.test:8443/oauth2/token"))
    assert "htu" in refused(proof(k, htu=12))


def test_wrong_htm_is_refused() -> None:
    assert "htm" in refused(proof(key(), htm="GET"))
    assert "htm" in refused(proof(key(), htm="post"))


def test_stale_or_future_iat_is_refused() -> None:
    k = key()
    assert "iat" in refused(proof(k, iat=(NOW - timedelta(seconds=61)).timestamp()))
    assert "iat" in refused(proof(k, iat=(NOW + timedelta(seconds=6)).timestamp()))
    assert "iat" in refused(proof(k, iat="now"))
    assert "iat" in refused(proof(k, iat=1e20))
    assert "iat" in refused(proof(k, iat=True))
    dpop.verify(proof(k, iat=(NOW - timedelta(seconds=59)).timestamp()), method="POST",
                url=URL, now=NOW)


def test_symmetric_none_and_unlisted_algorithms_are_refused() -> None:
    secret = OctKey.generate_key(256)
    header = {"typ": "dpop+jwt", "alg": "HS256", "jwk": secret.as_dict(private=False)}
    body = json.dumps({"htm": "POST", "htu": URL, "iat": NOW.timestamp(), "jti": "x"})
    hs = jws.serialize_compact(header, body, secret, algorithms=["HS256"])
    assert "alg" in refused(hs)
    unsigned = ".".join([dpop._b64(json.dumps({"typ": "dpop+jwt", "alg": "none", "jwk":
                                              key().as_dict(private=False)}).encode()),
                         dpop._b64(body.encode()), ""])
    assert "alg" in refused(unsigned)


def test_a_private_key_in_the_jwk_is_refused() -> None:
    k = key()
    assert "public" in refused(proof(k, jwk=k.as_dict(private=True)))
    rsa = key("RSA")
    assert "public" in refused(proof(rsa, alg="RS256", jwk=rsa.as_dict(private=True)))


def test_wrong_typ_missing_jwk_or_jti_and_bad_signatures_are_refused() -> None:
    k, other = key(), key()
    assert "typ" in refused(proof(k, typ="JWT"))
    assert "jwk" in refused(proof(k, jwk={"kty": "oct", "k": "AAAA"}))
    assert "jti" in refused(proof(k, jti=None))
    assert "jti" in refused(proof(k, jti="x" * 257))
    # Signed by another key than the one it carries.
    assert "signature" in refused(proof(other, jwk=k.as_dict(private=False)))
    good = proof(k)
    head, body, sig = good.split(".")
    assert "signature" in refused(".".join([head, body, sig[:-4] + "AAAA"]))
    for junk in [None, "", "a.b", "a.b.c.d", "é.é.é", "x" * 9000, "e30.e30.e30"]:
        refused(junk)


def test_ath_binds_a_proof_to_its_access_token() -> None:
    k = key()
    token = "tsa_example"
    good = proof(k, ath=dpop.ath(token), htm="GET", htu="https://api.test/things")
    dpop.verify(good, method="GET", url="https://api.test/things", now=NOW, access_token=token)
    assert "ath" in refused(good, method="GET", url="https://api.test/things",
                            access_token="tsa_other")
    assert "ath" in refused(proof(k, htm="GET", htu="https://api.test/things"), method="GET",
                            url="https://api.test/things", access_token=token)


def test_nonces_are_asked_for_and_checked() -> None:
    nonces = dpop.Nonces("key")
    k = key()
    with pytest.raises(dpop.UseDPoPNonce) as asked:
        dpop.verify(proof(k), method="POST", url=URL, now=NOW, nonces=nonces)
    nonce = asked.value.nonce
    assert ("DPoP-Nonce", nonce) in asked.value.get_headers()
    dpop.verify(proof(k, nonce=nonce), method="POST", url=URL, now=NOW, nonces=nonces)
    later = NOW + timedelta(seconds=dpop.Nonces.LIFETIME)  # the next slot still takes it
    dpop.verify(proof(k, nonce=nonce, iat=later.timestamp()), method="POST", url=URL,
                now=later, nonces=nonces)
    much_later = NOW + timedelta(seconds=3 * dpop.Nonces.LIFETIME)
    with pytest.raises(dpop.UseDPoPNonce):
        dpop.verify(proof(k, nonce=nonce, iat=much_later.timestamp()), method="POST", url=URL,
                    now=much_later, nonces=nonces)
    with pytest.raises(dpop.UseDPoPNonce):  # another server's key
        dpop.verify(proof(k, nonce=dpop.Nonces("other").current(NOW)), method="POST", url=URL,
                    now=NOW, nonces=nonces)


def test_checked_headers_are_kept_by_their_segment_and_bounded() -> None:
    headers = dpop._Headers(size=2)
    segments = [proof(key()).split(".")[0] for _ in range(3)]
    found = [headers.get(s) for s in segments]
    assert len(headers.entries) == 2 and segments[0] not in headers.entries
    assert headers.get(segments[-1]) is found[-1]  # the same, imported once
    # A refused header is refused every time (never kept).
    bad = proof(key(), typ="JWT").split(".")[0]
    for _ in range(2):
        with pytest.raises(dpop.InvalidDPoPProof):
            headers.get(bad)
    assert bad not in headers.entries


def _unsigned(header: dict, claims_segment: str) -> str:
    return ".".join([dpop._b64(json.dumps(header).encode()), claims_segment, "AAAA"])


def test_hostile_proofs_are_refused_never_raised() -> None:
    """What an attacker sends without any key, or signed with one: each is a refusal (400 or
    401 where it arrives), never an error of the server."""
    k, ed, rsa = key(), key("OKP"), key("RSA")
    deep = dpop._b64(b"[" * 5000)
    header = {"typ": "dpop+jwt", "alg": "ES256", "jwk": k.as_dict(private=False)}
    refused(_unsigned(header, deep))  # nested too deeply, before any signature
    refused(".".join([dpop._b64(b"[" * 3000), dpop._b64(b"{}"), "AAAA"]))
    # A key that does not fit the algorithm.
    body = dpop._b64(json.dumps({"htm": "POST", "htu": URL, "jti": "j",
                                 "iat": NOW.timestamp()}).encode())
    for alg, other in [("ES256", ed), ("ES256", rsa), ("ES384", k), ("RS256", k),
                       ("Ed25519", k)]:
        mismatched = {"typ": "dpop+jwt", "alg": alg, "jwk": other.as_dict(private=False)}
        assert "not a key for" in refused(_unsigned(mismatched, body)), alg
    # Non-ASCII where hashes and nonces are compared, a jti that is not UTF-8.
    assert "ath" in refused(proof(k, ath="é"), access_token="tsa_x")
    assert "ath" in refused(proof(k, ath="\ud800"), access_token="tsa_x")
    assert "jti" in refused(proof(k, jti="\ud800"))
    with pytest.raises(dpop.UseDPoPNonce):
        dpop.verify(proof(k, nonce="é"), method="POST", url=URL, now=NOW,
                    nonces=dpop.Nonces("key"))
